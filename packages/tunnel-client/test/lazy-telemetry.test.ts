// A connector without a collector loads none of OpenTelemetry (SDK, gRPC exporter, API), and of
// relay-core only its client side: on a customer's small VM what is not used must cost no
// memory. Every module the real turnpike-tunnel process resolves is recorded by a module hook
// (test-support's module-recorder); with OTLP configured the record shows the SDK, so it sees
// what loads.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  MODULE_RECORDER_LAUNCHER,
  moduleRecorderEnv,
  recordedBuiltins,
} from "@turnpike/test-support/module-recorder";
import { freePort } from "@turnpike/test-support/ports";
import { sleep, spawnManaged } from "@turnpike/test-support/process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanEnv, TUNNEL_BIN } from "./harness.js";

describe("turnpike-tunnel loads OpenTelemetry only when OTLP is configured, node:tls only for turns:, relay-core's client side only", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "turnpike-tunnel-modules-"));
  });
  afterAll(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** The module record of a started (and stopped) tunnel: its relay is not there. */
  async function recordOf(
    name: string,
    env: Record<string, string>,
    extraArgs: string[] = [],
  ): Promise<string[]> {
    const file = path.join(dir, `${name}.txt`);
    const relayPort = await freePort();
    const proc = spawnManaged(
      process.execPath,
      [
        MODULE_RECORDER_LAUNCHER,
        "--relay",
        `turn:127.0.0.1:${relayPort}?transport=tcp`,
        "--expose",
        "x=tcp://127.0.0.1:9",
        "--allow-peer",
        "127.0.0.1",
        "--log-level",
        "info",
        ...extraArgs,
      ],
      {
        env: cleanEnv({
          TURNPIKE_TOKEN: "lazy-telemetry-token",
          ...moduleRecorderEnv(TUNNEL_BIN, file),
          ...env,
        }),
      },
    );
    try {
      // Metrics start before the supervisor, whose start is the "started" line.
      for (let i = 0; i < 150 && !/ INFO started\b/.test(proc.stderr); i++) {
        if (proc.exited) throw new Error(`turnpike-tunnel exited:\n${proc.stderr}`);
        await sleep(100);
      }
      expect(proc.stderr).toMatch(/ INFO started\b/);
    } finally {
      await proc.stop("SIGTERM", 3000);
    }
    return readFileSync(file, "utf8").split("\n");
  }

  /** The OpenTelemetry and gRPC packages a started tunnel resolved. */
  async function otelPackages(name: string, env: Record<string, string>): Promise<string[]> {
    const urls = await recordOf(name, env);
    return [
      ...new Set(
        urls
          .filter((u) => /\/@opentelemetry\/|\/@grpc\//.test(u))
          .map((u) => /\/node_modules\/(@[^/]+\/[^/]+)\//.exec(u)?.[1] ?? u),
      ),
    ].sort();
  }

  it("without OTLP: no @opentelemetry or @grpc module at all", async () => {
    expect(await otelPackages("none", {})).toEqual([]);
  });

  // An ES import of node:http loads undici, http2 and zlib behind it (runtime-kit
  // node-builtins.ts); node:tls is for a turns: relay only.
  it("over turn: (TCP) with its admin API: node:http without undici, no node:tls", async () => {
    const builtins = recordedBuiltins(
      await recordOf("builtins", { TURNPIKE_ADMIN_TOKEN: "lazy-builtins-admin-token" }, [
        "--admin-listen",
        `127.0.0.1:${await freePort()}`,
      ]),
    );
    expect(builtins).toContain("http"); // the admin API
    expect(builtins).toContain("net"); // the record sees what the tunnel does load
    expect(
      builtins.filter((b) =>
        ["internal/deps/undici/undici", "http2", "zlib", "tls", "https"].includes(b),
      ),
    ).toEqual([]);
  });

  // relay-core's client entry (@turnpike/relay-core/client): the TurnClient, the codec and the
  // credentials it signs with, none of the server engine, its credential stores or its policy
  // beyond the address helpers (bench/README.md, "the connector's share of relay-core").
  it("of relay-core, only its client side: no server module", async () => {
    const relayCore = (await recordOf("relay-core", {}))
      .map((u) => /\/relay-core\/dist\/(.+\.js)$/.exec(u)?.[1])
      .filter((m): m is string => m !== undefined);
    expect(relayCore).toContain("client/turn-client.js"); // the record sees relay-core
    expect(relayCore).toContain("codec/message.js");
    expect(relayCore.filter((m) => m.startsWith("server/") || m === "index.js")).toEqual([]);
    expect(relayCore).not.toContain("auth/credentials.js");
  });

  it("with OTLP: the SDK and the gRPC exporter", async () => {
    const loaded = await otelPackages("otlp", {
      OTLP_GRPC_ENDPOINT: `127.0.0.1:${await freePort()}`,
      OTEL_METRIC_EXPORT_INTERVAL: "600000",
    });
    expect(loaded).toContain("@opentelemetry/sdk-metrics");
    expect(loaded).toContain("@opentelemetry/exporter-metrics-otlp-grpc");
    expect(loaded).toContain("@grpc/grpc-js");
  });
});
