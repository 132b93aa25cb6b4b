// Which targets a service may expose, judged on the address the socket layer dials: every
// spelling of a metadata or link-local address (zone ids, IPv4-mapped IPv6, the numeric forms
// getaddrinfo accepts), every answer of a name, on every connection (a rebinding name).
import { lookup } from "node:dns/promises";
import { createServer, type Server } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseTunnelArgs } from "../src/config/index.js";
import {
  type Lookup,
  metadataAddress,
  parseTargetHost,
  refusingLookup,
  TargetDialer,
  targetRefusal,
} from "../src/targets.js";

describe("targets: cloud metadata services are refused", () => {
  it("refuses link-local and metadata addresses in every spelling, and nothing private", () => {
    for (const ip of [
      "169.254.169.254",
      "169.254.170.2",
      "169.254.0.1",
      "::ffff:169.254.169.254",
      "::ffff:a9fe:a9fe",
      "fe80::1",
      "febf::1",
      "fd00:ec2::254",
      "fd00:ec2:0:0:0:0:0:254",
      "100.100.100.200",
    ]) {
      expect(metadataAddress(ip), ip).toBeDefined();
    }
    for (const ip of [
      "127.0.0.1",
      "10.0.0.5",
      "192.168.1.1",
      "fd00::53",
      "100.100.100.100",
      "::1",
      "db.internal",
    ]) {
      expect(metadataAddress(ip), ip).toBeUndefined();
    }
  });

  it("refuses --expose of a metadata target at start-up unless --allow-metadata-targets", () => {
    const argv = ["--relay", "turn:x", "--expose", "imds=tcp://169.254.169.254:80"];
    expect(() => parseTunnelArgs(argv, { TURNPIKE_TOKEN: "t" })).toThrow(
      /--expose imds: target 169.254.169.254 is link-local .* --allow-metadata-targets/,
    );
    const allowed = parseTunnelArgs([...argv, "--allow-metadata-targets"], { TURNPIKE_TOKEN: "t" });
    if (allowed.command !== "run") throw new Error(allowed.command);
    expect(allowed.services).toHaveLength(1);
    expect(allowed.warnings.some((w) => w.startsWith("--allow-metadata-targets is set"))).toBe(
      true,
    );
  });

  it("fails a name that resolves to a metadata address, whichever answer it is", async () => {
    const answering =
      (answers: string[]) =>
      (
        _name: string,
        options: object,
        cb: (e: null, a: string | { address: string; family: number }[], f?: number) => void,
      ) => {
        if ((options as { all?: boolean }).all)
          cb(
            null,
            answers.map((address) => ({ address, family: 4 })),
          );
        else cb(null, answers[0], 4);
      };
    const resolve = (answers: string[], all: boolean) =>
      new Promise<NodeJS.ErrnoException | null>((done) =>
        refusingLookup(answering(answers))("metadata.test", { all }, (err) => done(err)),
      );
    expect((await resolve(["10.0.0.5", "169.254.169.254"], true))?.code).toBe("EMETADATA");
    expect((await resolve(["169.254.169.254"], false))?.message).toMatch(
      /metadata.test resolves to 169.254.169.254/,
    );
    expect(await resolve(["10.0.0.5"], true)).toBeNull();
  });
});

describe("targets are read the way the socket layer reads them", () => {
  it("reads the numeric IPv4 forms exactly as getaddrinfo does", async () => {
    for (const host of [
      "127.1",
      "0x7f.1",
      "0x7f.0x1",
      "2130706433",
      "0x7f000001",
      "017700000001",
      "0177.0.0.1",
      "127.000.000.001",
      "169.254.43518",
      "0251.0376.0251.0376",
      "10.0.0.5",
    ]) {
      const parsed = parseTargetHost(host);
      const system = await lookup(host, { family: 4 });
      expect(parsed?.kind === "address" ? parsed.literal : parsed, host).toBe(system.address);
    }
  });

  it("refuses what getaddrinfo would not read as an address but no DNS name can be", () => {
    for (const host of [
      "127.1.",
      "169.254.169.254.",
      "08.1.1.1",
      "256.1.1.1",
      "4294967296",
      "0x",
      "1.2.3.4.5",
      "127.0.0.1%lo",
      "",
    ]) {
      expect(parseTargetHost(host), host).toBeUndefined();
      expect(targetRefusal(host, false), host).toMatch(/neither an IP address nor a DNS name/);
    }
    expect(parseTargetHost("db.internal.")).toEqual({ kind: "name", name: "db.internal." });
    expect(parseTargetHost("3com.example")).toEqual({ kind: "name", name: "3com.example" });
  });

  it("judges an IPv6 literal with a zone id by its address, and a zone id only on link-local", () => {
    expect(parseTargetHost("fe80::1%lo")).toMatchObject({ literal: "fe80::1%lo", zone: "lo" });
    for (const host of [
      "::ffff:169.254.169.254%lo",
      "fe80::1%lo",
      "fe80::1%25eth0",
      "fd00:ec2::254%1",
    ]) {
      expect(targetRefusal(host, false), host).toMatch(
        /is (link-local|the AWS).*--allow-metadata-targets/,
      );
    }
    expect(targetRefusal("::ffff:127.0.0.1%lo", false)).toMatch(
      /zone id \(%lo\) belongs only on a link-local/,
    );
    expect(targetRefusal("::ffff:127.0.0.1%lo", true)).toMatch(/zone id/);
    expect(targetRefusal("fe80::1%lo", true)).toBeUndefined();
    expect(targetRefusal("::ffff:127.0.0.1", false)).toBeUndefined();
  });

  it("refuses the metadata service in every numeric spelling, naming the address it means", () => {
    for (const host of [
      "169.254.43518",
      "2852039166",
      "0xa9.0xfe.0xa9.0xfe",
      "0251.0376.0251.0376",
      "0xa9fea9fe",
      "100.6579400",
      "::ffff:a9fe:a9fe",
      "64:ff9b::a9fe:a9fe",
    ]) {
      expect(targetRefusal(host, false), host).toMatch(/--allow-metadata-targets/);
    }
    expect(targetRefusal("2852039166", false)).toMatch(
      /^target 2852039166 \(169\.254\.169\.254\) is link-local/,
    );
    expect(targetRefusal("127.1", false)).toBeUndefined();
  });

  it("refuses --expose of a zone-id or numeric metadata spelling at start-up", () => {
    for (const target of [
      "tcp://[::ffff:169.254.169.254%lo]:80",
      "tcp://[fe80::1%lo]:80",
      "udp://2852039166:80",
    ]) {
      expect(() =>
        parseTunnelArgs(["--relay", "turn:x", "--expose", `imds=${target}`], {
          TURNPIKE_TOKEN: "t",
        }),
      ).toThrow(/^--expose imds: target .*--allow-metadata-targets/);
    }
  });
});

describe("the address dialled is judged on every connection", () => {
  /** A resolver whose answer changes: what a DNS-rebinding name does between two lookups. */
  const rebinding = (answers: string[]): Lookup => {
    let i = 0;
    return (_name, options, cb) => {
      const address = answers[Math.min(i++, answers.length - 1)]!;
      if ((options as { all?: boolean }).all) cb(null, [{ address, family: 4 }]);
      else cb(null, address, 4);
    };
  };

  // A TCP echo server on loopback: the target an allowed answer reaches.
  let server: Server;
  let port = 0;
  beforeAll(async () => {
    server = createServer((c) => c.pipe(c));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => server.close());

  const dial = (d: TargetDialer, host: string) =>
    new Promise<string>((resolve) => {
      const s = d.connect(host, port, {});
      s.once("connect", () => {
        const remote = s.remoteAddress ?? "";
        s.destroy();
        resolve(`connected ${remote}`);
      });
      s.once("error", (err: NodeJS.ErrnoException) =>
        resolve(`${err.code ?? "error"}: ${err.message}`),
      );
    });

  it("refuses a TCP connection when a name that passed before now resolves to the metadata service", async () => {
    const dialer = new TargetDialer(false, rebinding(["127.0.0.1", "169.254.169.254"]));
    expect(await dial(dialer, "rebind.test")).toBe("connected 127.0.0.1");
    expect(await dial(dialer, "rebind.test")).toMatch(
      /^EMETADATA: rebind.test resolves to 169.254.169.254 is link-local/,
    );
  });

  it("dials a literal as the address it checked, and fails a refused one like a refusing target", async () => {
    const dialer = new TargetDialer(false);
    expect(await dial(dialer, "127.1")).toBe("connected 127.0.0.1");
    expect(await dial(dialer, "::ffff:169.254.169.254%lo")).toMatch(/link-local/);
    expect(await dial(dialer, "::ffff:127.0.0.1%lo")).toMatch(/zone id/);
  });

  it("resolves a UDP service's target again on each connection, and refuses the rebound answer", async () => {
    const dialer = new TargetDialer(false, rebinding(["10.0.0.5", "169.254.169.254"]));
    expect(await dialer.resolve("rebind.test")).toEqual({ address: "10.0.0.5", family: 4 });
    await expect(dialer.resolve("rebind.test")).rejects.toThrow(/resolves to 169.254.169.254/);
    await expect(new TargetDialer(false).resolve("0xa9fea9fe")).rejects.toThrow(/link-local/);
    expect(await new TargetDialer(false).resolve("0x7f.1")).toEqual({
      address: "127.0.0.1",
      family: 4,
    });
  });
});
