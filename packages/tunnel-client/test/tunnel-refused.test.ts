// End to end: a relay that refuses a tunnel. A peer the relay's policy refuses (loopback, on a
// relay run without --allow-loopback-peers) leaves the service `refused`, not `ready`, with the
// reason and the fix in `turnpike-tunnel list`, said once at WARN while the tunnel keeps trying;
// the relay's debug log names the peer and the option. Revoked credentials do the same.
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { exposeArgs, startTunnel, type TunnelProcess } from "./harness.js";

const TOKEN = "tunnel-refused-secret";

describe("turnpike-tunnel refused by turnpike-relay", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  let tunnel: TunnelProcess | undefined;

  beforeEach(() => {
    range = reservePortRange(20);
  });
  afterEach(async () => {
    await tunnel?.stop();
    await relay?.stop("SIGINT", 5000);
    range.release();
    tunnel = undefined;
    relay = undefined;
  });

  /** WARN/DEBUG lines of the tunnel saying the relay refused it. */
  const refusals = (level: string) =>
    tunnel!.proc.stderr
      .split("\n")
      .filter((l) => l.includes(` ${level} the relay refused the tunnel, trying again`));

  /**
   * A tunnel exposing one (unreachable) UDP service through `relay`, backing off fast, that has
   * been refused at least `times` times.
   */
  async function refusedTunnel(times: number, args: string[]) {
    tunnel = await startTunnel(
      [
        ...exposeArgs(`turn:127.0.0.1:${relay!.port}`, { echo: "udp://127.0.0.1:9" }),
        "--backoff-base",
        "0.1",
        ...args,
      ],
      { TURNPIKE_TOKEN: TOKEN },
    );
    const [row] = await tunnel.waitFor(
      (rows) => rows[0]?.state === "refused" && rows[0].reconnects >= times,
      15_000,
      `the service refused ${times} times`,
    );
    return row!;
  }

  it("lists a service whose peer the relay refuses as refused, with why, and warns once", async () => {
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      logLevel: "debug",
      allowLoopbackPeers: false,
    });
    const row = await refusedTunnel(3, ["--backoff-max", "0.5", "--log-level", "debug"]);
    expect(row.lastError).toContain("permission for 127.0.0.1 refused: 403 Forbidden");
    expect(row.lastError).toContain("--allow-loopback-peers");
    await sleep(500);
    const rows = await tunnel!.list();
    expect(rows[0]!.state).not.toBe("ready");
    expect(refusals("WARN")).toHaveLength(1);
    expect(refusals("DEBUG").length).toBeGreaterThanOrEqual(2);
    expect(tunnel!.proc.stderr).not.toContain("tunnel ready");
    expect(relay.stderr).toMatch(
      /DEBUG peer refused by the relay's peer policy .*peer=127\.0\.0\.1 policy=loopback allowWith="--allow-loopback-peers/,
    );
  });

  it("keeps revoked credentials refused, warning once and retrying at the backoff cap", async () => {
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--revoke", "acme"],
    });
    const row = await refusedTunnel(4, ["--name", "acme", "--backoff-max", "0.4"]);
    expect(row.lastError).toBe("allocate failed: 403 Forbidden: credentials revoked");
    // At the default --log-level info the retries are silent after the one warning.
    expect(refusals("WARN")).toHaveLength(1);
    expect(tunnel!.proc.stderr).not.toContain("tunnel down, reconnecting");
  });
});
