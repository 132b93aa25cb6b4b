// RFC 6062 through a real turnpike-relay with relay-core's own TurnClient: a peer connects to
// the relayed TCP address (ConnectionAttempt), the client binds a data connection
// (ConnectionBind), and the pipe honours TCP half-close: a peer that sends its request and
// then FIN still gets the whole reply (RFC 6062 §5.5: each side's end is forwarded).
import { createHash, randomBytes } from "node:crypto";
import { mintRestCredentials } from "@turnpike/relay-core";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { rfc6062Echo } from "@turnpike/test-support/rfc6062";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-tcp-relay-token";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("RFC 6062 TCP relaying through turnpike-relay", () => {
  let relay: TurnpikeHandle | undefined;
  let range: PortRange | undefined;
  beforeAll(async () => {
    range = reservePortRange(50);
    relay = await startTurnpike({ minPort: range.min, maxPort: range.max, token: TOKEN });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("delivers a peer's whole reply after the peer half-closes its side", async () => {
    const creds = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 3600, "e2e");
    const payload = randomBytes(1 << 20);
    const reply = await rfc6062Echo({
      port: relay!.port,
      username: creds.username,
      password: creds.password,
      payload,
    });
    expect(reply.length).toBe(payload.length);
    expect(sha(reply)).toBe(sha(payload));
  });
});
