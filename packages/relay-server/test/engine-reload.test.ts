// A reload as one engine takes it (engine/driver.ts, applyReloadable), in this process: the
// revocation list, the secrets and the limits of a newer generation apply at once, and a
// generation the engine already has, or an older one, changes nothing (a reload that reaches a
// worker twice, or late, must not undo a newer one).
import { mintRestCredentials, type TurnServer } from "@turnpike/relay-core";
import { createLogger } from "@turnpike/runtime-kit";
import { reservePortRange } from "@turnpike/test-support/ports";
import { TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { afterEach, describe, expect, it } from "vitest";
import type { RelayConfig } from "../src/config/types.js";
import { LegacyPinWarnings } from "../src/engine/legacy-pins.js";
import { type InProcessEngine, startEngine, TOKEN, USER } from "./in-process.js";

let engine: InProcessEngine | undefined;
let release: (() => void) | undefined;
const clients: TurnClientLite[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await engine?.relay.close();
  release?.();
});

async function allocate(creds: { username: string; password: string }): Promise<number> {
  const c = await TurnClientLite.open({ port: engine!.relay.addresses().udp[0]!.port, ...creds });
  clients.push(c);
  return (await c.allocate()).code;
}

const rest = (token: string) =>
  mintRestCredentials(token, Math.floor(Date.now() / 1000), 600, "webapp");

describe("a reload in one engine", () => {
  it("applies a newer generation's revocation list, secrets and limits, and ignores the same or an older one", async () => {
    const range = reservePortRange(20);
    release = range.release;
    engine = await startEngine("dgram", range);
    const config = engine.config;
    const apply = (c: Partial<RelayConfig>, generation: number) =>
      engine!.relay.applyReloadable({ ...config, ...c }, generation);
    expect(await allocate(USER)).toBe(0);

    expect(await apply({ revoke: ["static:alice"] }, 2)).toEqual({
      allocationsEnded: 1,
      problems: [],
    });
    expect(await allocate(USER)).toBe(403);
    // Generation 2 again, and generation 1 late: nothing changes.
    await apply({ revoke: [] }, 2);
    await apply({ revoke: [] }, 1);
    expect(await allocate(USER)).toBe(403);

    await apply({ revoke: [], tokens: ["rotated", TOKEN], maxAllocationsPerUser: 1 }, 3);
    expect(await allocate(USER)).toBe(0);
    expect(await allocate(USER)).toBe(486);
    expect(await allocate(rest(TOKEN))).toBe(0);
    expect(await allocate(rest("rotated"))).toBe(486);
    await apply({ tokens: ["rotated"], maxAllocationsPerUser: 100 }, 4);
    expect(await allocate(rest(TOKEN))).toBe(401);
    expect(await allocate(rest("rotated"))).toBe(0);
  });
});

describe("pinned credentials of the old scheme", () => {
  // Signed with the token itself, as before pins had a key of their own.
  const oldPin = (port: number) =>
    mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 600, `acme;port=${port}`);

  it("are refused, and accepted inside the --legacy-pinned-credentials-until window", async () => {
    const range = reservePortRange(20);
    release = range.release;
    const pinned = ["--pinned-ports", `${range.min + 10}-${range.max}`];
    engine = await startEngine("dgram", { min: range.min, max: range.min + 9 }, pinned);
    expect(await allocate(oldPin(range.min + 10))).toBe(401);
    await engine.relay.close();
    engine = await startEngine("dgram", { min: range.min, max: range.min + 9 }, [
      ...pinned,
      "--legacy-pinned-credentials-until",
      new Date(Date.now() + 86_400_000).toISOString().slice(0, 10),
    ]);
    expect(await allocate(oldPin(range.min + 11))).toBe(0);
  });

  it("make the engine warn while they arrive, once per window, with how many", () => {
    const lines: string[] = [];
    const stats = { legacyPinnedAccepted: 0 };
    const warnings = new LegacyPinWarnings(
      { stats } as unknown as TurnServer,
      createLogger({ write: (l) => lines.push(l) }),
    );
    warnings.check();
    expect(lines).toEqual([]);
    stats.legacyPinnedAccepted = 3;
    warnings.check();
    stats.legacyPinnedAccepted = 5;
    warnings.check();
    warnings.check();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /WARN accepted pinned credentials of the old scheme \(--legacy-pinned-credentials-until\): re-mint them before the window closes accepted=3 acceptedTotal=3$/,
    );
    warnings.stop();
    expect(lines[1]).toMatch(/suppressed repeated log lines key=legacy-pinned suppressed=1/);
  });
});
