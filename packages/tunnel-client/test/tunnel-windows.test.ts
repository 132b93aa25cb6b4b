// Access windows on a running turnpike-tunnel (real processes, loopback): the hidden test hook
// --test-clock FILE moves the access-window clock, so the window "Mon-Fri 08:00-18:00
// Europe/Berlin" closes and opens while the process runs. Outside it the allocations are
// released (the relayed addresses stop answering, /list says "closed-window"); inside it they
// come back and traffic flows. Bounded waits.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  echoUdp,
  type ListRow,
  logCount,
  parseAddress,
  tcpRoundTrip,
  udpPeer,
  useTunnelFixture,
} from "./harness.js";

const TOKEN = "tunnel-windows-secret";
const WINDOW = "Mon-Fri 08:00-18:00 Europe/Berlin";
// Wednesday 2 July 2025, CEST (UTC+2).
const WED_NOON_BERLIN = "2025-07-02T10:00:00Z";
const WED_EVENING_BERLIN = "2025-07-02T17:00:00Z"; // 19:00 in Berlin: closed
const THU_MORNING_BERLIN = "2025-07-03T07:30:00Z"; // 09:30 in Berlin: open again

const allIn = (rows: ListRow[], state: string) =>
  rows.length === 2 && rows.every((r) => r.state === state);

describe("access windows on a running tunnel", () => {
  let dir: string;
  let clock: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "turnpike-tunnel-windows-"));
    clock = join(dir, "clock");
    writeFileSync(clock, WED_NOON_BERLIN);
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const f = useTunnelFixture({
    token: TOKEN,
    tunnelArgs: () => ["--window", WINDOW, "--test-clock", clock],
    ready: 0,
  });

  /** UDP echoes and a TCP round trip through the rows' relayed addresses; counts what came back. */
  async function reach(rows: ListRow[]): Promise<{ udp: number; tcp: boolean }> {
    const u = parseAddress(rows.find((r) => r.protocol === "udp")!.relayedAddress!);
    const t = parseAddress(rows.find((r) => r.protocol === "tcp")!.relayedAddress!);
    const platform = await udpPeer("127.0.0.1");
    const echoed = await echoUdp(platform, u, 20, { batch: 20, waitMs: 1000 });
    platform.close();
    const hello = Buffer.from("hello through the window");
    const back = await tcpRoundTrip(t, hello, 3000).catch(() => undefined);
    return { udp: echoed, tcp: back?.equals(hello) === true };
  }

  it("releases the allocations when the window closes and allocates again when it opens", async () => {
    const tunnel = f.tunnel;
    const open = await tunnel.waitFor((r) => allIn(r, "ready"), 15_000, "ready inside the window");
    expect(await reach(open)).toEqual({ udp: 20, tcp: true });

    writeFileSync(clock, WED_EVENING_BERLIN);
    const t0 = performance.now();
    const closed = await tunnel.waitFor(
      (r) => allIn(r, "closed-window"),
      5_000,
      "closed-window after 18:00 Berlin",
    );
    const closeMs = performance.now() - t0;
    expect(closed.every((r) => r.relayedAddress === null)).toBe(true);
    // The relay released them (Refresh lifetime 0): the old addresses no longer reach anything.
    expect(await reach(open)).toEqual({ udp: 0, tcp: false });
    expect(logCount(tunnel.proc, "access window closed")).toBeGreaterThanOrEqual(1);

    writeFileSync(clock, THU_MORNING_BERLIN);
    const t1 = performance.now();
    const again = await tunnel.waitFor(
      (r) => allIn(r, "ready"),
      10_000,
      "ready again at 09:30 Berlin",
    );
    const openMs = performance.now() - t1;
    expect(await reach(again)).toEqual({ udp: 20, tcp: true });
    // Closed on purpose is not a lost relay.
    expect(again.every((r) => r.reconnects === 0)).toBe(true);
    console.log(
      `[tunnel-windows] closed-window ${closeMs.toFixed(0)} ms after the clock left the window, ready ${openMs.toFixed(0)} ms after it re-entered`,
    );
  });
});
