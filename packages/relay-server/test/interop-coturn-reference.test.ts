// Proves the interop harness against coturn, the reference TURN server (TURN REST API secret
// mode). The same checks (test-support/src/interop-checks.ts) run against Turnpike in
// interop-turnpike.test.ts, so a failure there that passes here is Turnpike's, not the harness's.
// Loopback only; every process and wait is bounded.

import { type CoturnHandle, startCoturn } from "@turnpike/test-support/coturn";
import {
  defineChromiumChecks,
  defineTurnutilsChecks,
  type RelayUnderTest,
} from "@turnpike/test-support/interop-checks";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, beforeAll, describe } from "vitest";

const SECRET = "interop-reference-secret";
const TURNUTILS = ["turnserver", "turnutils_uclient", "turnutils_peer", "turnutils_stunclient"];

/** Starts coturn in REST-secret mode on a free port with its own relay port block. */
function useCoturn(): () => RelayUnderTest {
  let coturn: CoturnHandle | undefined;
  let range: PortRange | undefined;
  beforeAll(async () => {
    range = reservePortRange(200);
    coturn = await startCoturn({
      port: await freePort(),
      mode: "rest",
      secret: SECRET,
      minPort: range.min,
      maxPort: range.max,
    });
  });
  afterAll(async () => {
    await coturn?.stop();
    range?.release();
  });
  return () => {
    if (!coturn) throw new Error("coturn did not start");
    return { name: "coturn", port: coturn.port, secret: SECRET };
  };
}

describe.skipIf(skipUnlessTools(...TURNUTILS))("coturn reference: turnutils clients", () => {
  beforeAll(() => requireTools(...TURNUTILS));
  const target = useCoturn();
  defineTurnutilsChecks(target, { tcpRelay: true });
});

describe.skipIf(skipUnlessTools("turnserver", "chromium"))("coturn reference: Chromium", () => {
  beforeAll(() => requireTools("turnserver", "chromium"));
  const target = useCoturn();
  defineChromiumChecks(target);
});
