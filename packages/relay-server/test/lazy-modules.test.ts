// What is not asked for costs no memory: a relay without a collector loads none of
// OpenTelemetry (its SDK, the gRPC exporter, the Prometheus exporter, not even the API), and a
// relay that is not asked for --help loads no help renderer (cliui, string-width: yargs-lean.ts
// in runtime-kit). Each module the real turnpike-relay process resolves is recorded by a module
// hook (test-support's module-recorder); the configured cases and --help show that the record
// sees them when they are loaded. Node's own modules too: an ES import of node:http would load
// undici, http2 and zlib behind it (runtime-kit node-builtins.ts), and node:tls is for TURNS.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  MODULE_RECORDER_LAUNCHER,
  moduleRecorderEnv,
  recordedBuiltins,
} from "@turnpike/test-support/module-recorder";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { selfSignedCert } from "@turnpike/test-support/tls";
import { startTurnpike, TURNPIKE_BIN, turnpikeBuilt } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const OTEL = /\/@opentelemetry\/|\/@grpc\//;
const HELP_RENDERER = /\/node_modules\/(cliui|string-width|wrap-ansi)\//;
/** What the relay never uses: undici (fetch, WebSocket) and what it loads. */
const UNUSED_BUILTINS = ["internal/deps/undici/undici", "http2", "zlib"];

describe.skipIf(!turnpikeBuilt())(
  "turnpike-relay loads OpenTelemetry, node:tls and its help renderer only when asked",
  () => {
    let range: PortRange;
    let dir: string;
    beforeAll(async () => {
      range = reservePortRange(16);
      dir = mkdtempSync(path.join(tmpdir(), "turnpike-modules-"));
    });
    afterAll(() => {
      range?.release();
      if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    });

    /** The lines a started (and stopped) relay's module record holds. */
    async function recordOf(name: string, env: Record<string, string>, extraArgs: string[] = []) {
      const file = path.join(dir, `${name}.txt`);
      const relay = await startTurnpike({
        minPort: range.min,
        maxPort: range.max,
        token: "lazy-telemetry-token",
        bin: MODULE_RECORDER_LAUNCHER,
        env: { ...moduleRecorderEnv(TURNPIKE_BIN, file), ...env },
        extraArgs,
      });
      await relay.stop();
      const lines = readFileSync(file, "utf8").split("\n");
      expect(lines.some((u) => u.includes("/relay-server/dist/main.js"))).toBe(true);
      return lines;
    }

    /** The package names (…/node_modules/NAME/…) a started relay resolved, deduplicated. */
    async function loadedPackages(
      name: string,
      env: Record<string, string>,
      extraArgs: string[] = [],
    ) {
      const urls = await recordOf(name, env, extraArgs);
      return [...new Set(urls.filter((u) => OTEL.test(u)).map(packageOf))].sort();
    }

    it("without OTLP or Prometheus: no @opentelemetry or @grpc module at all", async () => {
      expect(await loadedPackages("none", {})).toEqual([]);
    });

    it("with the health listener and no TLS listener: node:http without undici, no node:tls", async () => {
      const builtins = recordedBuiltins(await recordOf("builtins", {}));
      expect(builtins).toContain("http"); // the health listener (the harness turns it on)
      expect(builtins).toContain("dgram"); // the record sees what the relay does load
      expect(builtins.filter((b) => UNUSED_BUILTINS.includes(b))).toEqual([]);
      expect(builtins.filter((b) => b === "tls" || b === "https")).toEqual([]);
    });

    it("with a TLS listener: node:tls, and still no undici", async () => {
      const { cert, key } = selfSignedCert(dir);
      const builtins = recordedBuiltins(
        await recordOf("builtins-tls", {}, [
          "--tls-listen",
          `127.0.0.1:${await freePort()}`,
          "--tls-cert",
          cert,
          "--tls-key",
          key,
        ]),
      );
      expect(builtins).toContain("tls");
      expect(builtins.filter((b) => UNUSED_BUILTINS.includes(b))).toEqual([]);
    });

    it("loads the help renderer for --help only", async () => {
      const run = (name: string, args: string[]) => {
        const file = path.join(dir, `${name}.txt`);
        const r = spawnSync(process.execPath, [MODULE_RECORDER_LAUNCHER, ...args], {
          env: { ...process.env, ...moduleRecorderEnv(TURNPIKE_BIN, file) },
          encoding: "utf8",
          timeout: 30_000,
        });
        expect(r.status, r.stderr).toBe(0);
        const urls = readFileSync(file, "utf8").split("\n");
        return [...new Set(urls.filter((u) => HELP_RENDERER.test(u)).map(packageOf))].sort();
      };
      expect(run("version", ["--version"])).toEqual([]);
      expect(run("help", ["--help"])).toEqual(["cliui", "string-width", "wrap-ansi"]);
    });

    it("with OTLP: the SDK and the gRPC exporter, not the Prometheus exporter", async () => {
      const port = await freePort();
      const loaded = await loadedPackages("otlp", {
        OTLP_GRPC_ENDPOINT: `127.0.0.1:${port}`,
        OTEL_METRIC_EXPORT_INTERVAL: "600000",
      });
      expect(loaded).toContain("@opentelemetry/sdk-metrics");
      expect(loaded).toContain("@opentelemetry/exporter-metrics-otlp-grpc");
      expect(loaded).toContain("@grpc/grpc-js");
      expect(loaded).not.toContain("@opentelemetry/exporter-prometheus");
    });

    it("with Prometheus only: the SDK and the Prometheus exporter, no gRPC", async () => {
      const loaded = await loadedPackages("prometheus", {}, [
        "--prometheus-listen",
        `127.0.0.1:${await freePort()}`,
      ]);
      expect(loaded).toContain("@opentelemetry/sdk-metrics");
      expect(loaded).toContain("@opentelemetry/exporter-prometheus");
      expect(loaded.filter((p) => p.includes("grpc"))).toEqual([]);
    });
  },
);

/** "@scope/name" of a node_modules URL (pnpm's .pnpm/<dir>/node_modules/@scope/name/...). */
function packageOf(url: string): string {
  const rest = url.slice(url.lastIndexOf("/node_modules/") + "/node_modules/".length);
  const parts = rest.split("/");
  return parts[0]!.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!;
}
