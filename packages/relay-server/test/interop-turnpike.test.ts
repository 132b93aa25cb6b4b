// Real clients against Turnpike: coturn's turnutils (Binding; UDP and TCP; channels and Send
// indications; RFC 6062; a wrong secret) and a real Chromium (relay-only WebRTC over TURN/UDP and
// TURN/TCP). Exactly the checks interop-coturn-reference.test.ts runs against coturn, so a check
// that passes there and fails here points at Turnpike. The relay runs as the operator runs it:
// the bin launcher, the secret in TURNPIKE_TOKEN, readiness from GET /readyz.

import {
  defineChromiumChecks,
  defineTurnutilsChecks,
  useTurnpike,
} from "@turnpike/test-support/interop-checks";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import { beforeAll, describe } from "vitest";

const TOKEN = "interop-turnpike-token";
const TURNUTILS = ["turnutils_uclient", "turnutils_peer", "turnutils_stunclient"];

// A missing tool skips locally and fails under CI=true.
describe.skipIf(skipUnlessTools(...TURNUTILS))("turnpike: turnutils clients", () => {
  beforeAll(() => requireTools(...TURNUTILS));
  const { target } = useTurnpike(TOKEN);
  defineTurnutilsChecks(target, { tcpRelay: true });
});

describe.skipIf(skipUnlessTools("chromium"))("turnpike: Chromium", () => {
  beforeAll(() => requireTools("chromium"));
  const { target } = useTurnpike(TOKEN);
  defineChromiumChecks(target);
});
