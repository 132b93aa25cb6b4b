// The launcher holds V8's optimizing compilers while the relay loads and starts (runtime-kit
// startup-tiering.ts: Node's module-path helpers get hot while the modules load, and compiling
// them keeps the compilers paged in in every idle relay: TurboFan 5.5 MB, Maglev 4.8 MB more on
// Node 26), and the relay lets them go once it is up. Watched from V8's own trace (--trace-opt)
// of the real process started by its committed launcher with the launcher's own node flags:
// nothing is compiled by TurboFan, nor by Maglev where the build has it, until the relay is
// ready, and its data path is once STUN traffic arrives, on every Node line the suite runs on.
import { createSocket } from "node:dgram";
import { buildHasMaglev } from "@turnpike/runtime-kit/startup-tiering";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import {
  launcherNodeFlags,
  startTurnpike,
  type TurnpikeHandle,
  turnpikeBuilt,
} from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TURBOFAN = /^\[completed optimizing .*target TURBOFAN/;
const MAGLEV = /^\[completed compiling .*target MAGLEV/;
const BUILD_HAS_MAGLEV = buildHasMaglev();

/** `count` STUN Binding requests (RFC 8489 §6: header only) to 127.0.0.1:port, in bursts. */
async function bindingRequests(port: number, count: number): Promise<void> {
  const socket = createSocket("udp4");
  const request = Buffer.alloc(20);
  request.writeUInt16BE(0x0001, 0); // Binding request, no attributes
  request.writeUInt32BE(0x2112a442, 4); // magic cookie
  try {
    for (let sent = 0; sent < count; ) {
      for (let i = 0; i < 500 && sent < count; i++, sent++) {
        request.writeUInt32BE(sent, 16); // a transaction id of its own
        socket.send(request, port, "127.0.0.1");
      }
      await sleep(5);
    }
  } finally {
    socket.close();
  }
}

const traceLines = (relay: TurnpikeHandle, tier: RegExp) =>
  relay.stdout.split("\n").filter((line) => tier.test(line));

describe.skipIf(!turnpikeBuilt())("turnpike-relay's optimizing compiler at start", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  beforeAll(() => {
    range = reservePortRange(8);
  });
  afterAll(async () => {
    await relay?.stop();
    range?.release();
  });

  it("compiles nothing with TurboFan or Maglev until ready, then compiles the data path under traffic", async () => {
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: "startup-tiering-token",
      nodeFlags: [...launcherNodeFlags(), "--trace-opt"],
    });
    // /readyz answered 200: every module is loaded and the hold has been let go.
    expect(traceLines(relay, TURBOFAN)).toEqual([]);
    expect(traceLines(relay, MAGLEV)).toEqual([]);

    // Bounded: at most 20 rounds of 20,000 requests (the relay answers a share of them; each
    // one is parsed and checked, which is what makes the data path hot).
    const compiled = () =>
      traceLines(relay!, TURBOFAN).length > 0 &&
      (!BUILD_HAS_MAGLEV || traceLines(relay!, MAGLEV).length > 0);
    for (let round = 0; round < 20 && !compiled(); round++) {
      await bindingRequests(relay.port, 20_000);
      await sleep(200);
    }
    expect(traceLines(relay, TURBOFAN).length).toBeGreaterThan(0);
    if (BUILD_HAS_MAGLEV) expect(traceLines(relay, MAGLEV).length).toBeGreaterThan(0);
  });
});
