// The launcher holds TurboFan while the relay loads and starts (runtime-kit startup-tiering.ts:
// Node's module-path helpers get hot while the modules load, and compiling them keeps 5.5 MB of
// the compiler paged in in every idle relay), and the relay lets it go once it is up. Watched
// from V8's own trace (--trace-opt) of the real process started by its committed launcher:
// nothing is compiled by TurboFan until the relay is ready, and its data path is once STUN
// traffic arrives, on every Node line the suite runs on.
import { createSocket } from "node:dgram";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { startTurnpike, type TurnpikeHandle, turnpikeBuilt } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TURBOFAN = /^\[completed optimizing .*target TURBOFAN/;

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

const turbofanLines = (relay: TurnpikeHandle) =>
  relay.stdout.split("\n").filter((line) => TURBOFAN.test(line));

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

  it("compiles nothing with TurboFan until ready, then compiles the data path under traffic", async () => {
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: "startup-tiering-token",
      nodeFlags: ["--max-semi-space-size=1", "--trace-opt"],
    });
    // /readyz answered 200: every module is loaded and the hold has been let go.
    expect(turbofanLines(relay)).toEqual([]);

    // Bounded: at most 20 rounds of 20,000 requests (the relay answers a share of them; each
    // one is parsed and checked, which is what makes the data path hot).
    for (let round = 0; round < 20 && turbofanLines(relay).length === 0; round++) {
      await bindingRequests(relay.port, 20_000);
      await sleep(200);
    }
    expect(turbofanLines(relay).length).toBeGreaterThan(0);
  });
});
