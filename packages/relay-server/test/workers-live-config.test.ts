// The configuration the supervisor starts workers with and sends them on reload
// (workers/live-config.ts), without threads: the configuration comes from the real parser.
import { describe, expect, it } from "vitest";
import { parseRelayArgs } from "../src/config/parse.js";
import type { RelayConfig } from "../src/config/types.js";
import { LiveConfiguration, sumReloadOutcomes } from "../src/workers/live-config.js";

function config(...args: string[]): RelayConfig {
  const parsed = parseRelayArgs(
    ["--token", "live-config-token", "--relay-ip", "127.0.0.1", ...args],
    {},
    { networkInterfaces: () => ({}) },
  );
  if (parsed.command !== "relay") throw new Error(`not a relay config: ${parsed.command}`);
  return parsed;
}

const BOUND = {
  udp: [{ family: 4 as const, ip: "127.0.0.1", port: 40001 }],
  tcp: [{ family: 4 as const, ip: "127.0.0.1", port: 40001 }],
  tls: [{ family: 4 as const, ip: "127.0.0.1", port: 40002 }],
};

describe("the workers' live configuration", () => {
  it("starts later workers on the ports the first one bound where the configuration says 0", () => {
    const start = config("--listen", "127.0.0.1:0", "--listen", "127.0.0.1:3478");
    const live = new LiveConfiguration(
      { ...start, tlsListen: [{ family: 4, ip: "127.0.0.1", port: 0 }] },
      1,
    );
    live.joinBoundPorts({
      ...BOUND,
      udp: [...BOUND.udp, { family: 4, ip: "127.0.0.1", port: 3478 }],
    });
    expect(live.config.listen.map((a) => a.port)).toEqual([40001, 3478]);
    expect(live.config.tlsListen.map((a) => a.port)).toEqual([40002]);
  });

  it("takes a newer reload's settings and keeps the bound ports", () => {
    const live = new LiveConfiguration(config("--listen", "127.0.0.1:0", "--log-level", "info"), 1);
    live.joinBoundPorts(BOUND);
    expect(live.advance(config("--listen", "127.0.0.1:0", "--log-level", "debug"), 2)).toBe(true);
    expect(live.generation).toBe(2);
    expect(live.config.logLevel).toBe("debug");
    expect(live.config.listen.map((a) => a.port)).toEqual([40001]);
    expect(live.reload(7)).toMatchObject({ t: "ask", id: 7, what: "reload", generation: 2 });
  });

  it("ignores a reload that is not newer than the one it holds", () => {
    const live = new LiveConfiguration(config("--log-level", "warn"), 3);
    expect(live.advance(config("--log-level", "debug"), 3)).toBe(false);
    expect(live.advance(config("--log-level", "debug"), 2)).toBe(false);
    expect(live.generation).toBe(3);
    expect(live.config.logLevel).toBe("warn");
  });

  it("sums the workers' reload outcomes, each problem once, a silent worker counting nothing", () => {
    expect(
      sumReloadOutcomes([
        { allocationsEnded: 2, problems: ["--tls-cert: unreadable"] },
        undefined,
        { allocationsEnded: 1, problems: ["--tls-cert: unreadable"] },
      ]),
    ).toEqual({ allocationsEnded: 3, problems: ["--tls-cert: unreadable"] });
  });
});
