// Real clients against Turnpike: coturn's turnutils (Binding; UDP and TCP; channels and Send
// indications; RFC 6062; a wrong secret) and a real Chromium (relay-only WebRTC over TURN/UDP and
// TURN/TCP). Exactly the checks interop-coturn-reference.test.ts runs against coturn, so a check
// that passes there and fails here points at Turnpike. The relay runs as the operator runs it:
// the bin launcher, the secret in TURNPIKE_TOKEN, readiness from GET /readyz.

import {
  defineChromiumChecks,
  defineTurnutilsChecks,
  type RelayUnderTest,
} from "@turnpike/test-support/interop-checks";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe } from "vitest";

const TOKEN = "interop-turnpike-token";
const TURNUTILS = ["turnutils_uclient", "turnutils_peer", "turnutils_stunclient"];

/** Starts turnpike-relay on free loopback ports with its own relay port block. */
function useTurnpike(): () => RelayUnderTest {
  let relay: TurnpikeHandle | undefined;
  let range: PortRange | undefined;
  beforeAll(async () => {
    // Room for the three concurrent uclient runs (72 allocations, each on an even port: EVEN-PORT,
    // often with the next one reserved), even when --workers 2 puts all of one source's TCP
    // clients on one worker's half of the range.
    range = reservePortRange(400);
    // coturn's uclient binds RFC 5766 channel numbers (above 0x4FFF).
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      legacyChannelNumbers: true,
    });
  });
  afterAll(async () => {
    // SIGINT closes at once (SIGTERM would drain live allocations for up to --drain-timeout).
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });
  return () => {
    if (!relay) throw new Error("turnpike-relay did not start");
    return { name: "turnpike", port: relay.port, secret: TOKEN };
  };
}

// A missing tool skips locally and fails under CI=true.
describe.skipIf(skipUnlessTools(...TURNUTILS))("turnpike: turnutils clients", () => {
  beforeAll(() => requireTools(...TURNUTILS));
  const target = useTurnpike();
  defineTurnutilsChecks(target, { tcpRelay: true });
});

describe.skipIf(skipUnlessTools("chromium"))("turnpike: Chromium", () => {
  beforeAll(() => requireTools("chromium"));
  const target = useTurnpike();
  defineChromiumChecks(target);
});
