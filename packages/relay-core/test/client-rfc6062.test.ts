import { describe, expect, it } from "vitest";
import { readString, readUint32 } from "../src/codec/attributes.js";
import { AttributeType, ErrorCode, MessageClass, Method } from "../src/codec/constants.js";
import { decodeStun } from "../src/codec/message.js";
import { connectionId, type PeerConnectionId } from "../src/ids.js";
import { Harness, PEER } from "./client-harness.js";

const DATA_CONNECTION = connectionId(2);

function tcpAllocation(): Harness {
  const h = new Harness({ transport: "tcp", client: { requestedTransport: "tcp" } });
  h.client.allocate(h.now);
  if (!h.runUntil(() => h.client.state === "allocated")) throw new Error("no TCP allocation");
  h.client.createPermission(PEER.address, h.now);
  h.runUntil(() => h.eventsOf("permission-created").length > 0);
  return h;
}

/** The runtime's part of RFC 6062 §4.3: a new connection, ConnectionBind, read the answer. */
function bindDataConnection(h: Harness, id: PeerConnectionId) {
  h.openDataConnection(DATA_CONNECTION, 40001);
  h.writeData(DATA_CONNECTION, h.client.connectionBindRequest(id));
  const answers = h.dataInbox.get(DATA_CONNECTION)!;
  expect(answers.length).toBe(1);
  return h.client.handleConnectionBindResponse(answers[0]!);
}

describe("TurnClient TCP relaying (RFC 6062) against TurnServer", () => {
  it("allocates with REQUESTED-TRANSPORT TCP over a TCP control connection", () => {
    const h = tcpAllocation();
    const created = h.serverOutputs.find((c) => c.output.type === "allocation-created");
    expect(created?.output.type === "allocation-created" && created.output.transport).toBe("tcp");
  });

  it("refuses to ask for a TCP allocation over UDP", () => {
    expect(() => new Harness({ transport: "udp", client: { requestedTransport: "tcp" } })).toThrow(
      /tcp or tls/,
    );
  });

  it("Connect: the server dials the peer, then ConnectionBind on a new connection binds it", () => {
    const h = tcpAllocation();
    h.client.connect(PEER, h.now);
    h.runUntil(() => h.eventsOf("connected").length > 0);
    const connected = h.eventsOf("connected")[0]!;
    expect(connected.peer).toEqual(PEER);
    const dial = h.serverOutputs.find((c) => c.output.type === "connect-peer")?.output;
    expect(dial?.type === "connect-peer" && [dial.address, dial.port, dial.peerConnection]).toEqual(
      [PEER.address, PEER.port, connected.connectionId],
    );
    expect(bindDataConnection(h, connected.connectionId)).toEqual({
      ok: true,
      connectionId: connected.connectionId,
    });
    const bound = h.serverOutputs.find((c) => c.output.type === "bind-connection")?.output;
    expect(bound).toEqual({
      type: "bind-connection",
      peerConnection: connected.connectionId,
      dataConnection: DATA_CONNECTION,
    });
  });

  it("reports a ConnectionAttempt from a peer, and binds it", () => {
    const h = tcpAllocation();
    const id = h.peerConnects(PEER);
    expect(id).toBeDefined();
    h.advance(20);
    expect(h.eventsOf("connection-attempt")).toEqual([
      { type: "connection-attempt", peer: PEER, connectionId: id },
    ]);
    expect(bindDataConnection(h, id!)).toEqual({ ok: true, connectionId: id });
  });

  it("reports 447 when the server cannot reach the peer", () => {
    const h = tcpAllocation();
    h.connectOutcome = "refused";
    h.client.connect(PEER, h.now);
    h.runUntil(() => h.eventsOf("connect-failed").length > 0);
    expect(h.eventsOf("connect-failed")).toEqual([
      {
        type: "connect-failed",
        peer: PEER,
        code: ErrorCode.ConnectionTimeoutOrFailure,
        reason: "Connection Timeout or Failure",
      },
    ]);
    expect(h.client.state).toBe("allocated");
  });

  it("reports 403 for a Connect to a peer without a permission", () => {
    const h = tcpAllocation();
    const stranger = { family: 4 as const, address: "127.0.0.9", port: 5432 };
    h.client.connect(stranger, h.now);
    h.runUntil(() => h.eventsOf("connect-failed").length > 0);
    expect(h.eventsOf("connect-failed")[0]).toMatchObject({ peer: stranger, code: 403 });
  });

  it("a ConnectionBind for a connection the server does not hold fails with 400", () => {
    const h = tcpAllocation();
    expect(bindDataConnection(h, 12345 as PeerConnectionId)).toMatchObject({
      ok: false,
      code: ErrorCode.BadRequest,
    });
  });

  it("ConnectionBind carries CONNECTION-ID and the control connection's credentials", () => {
    const h = tcpAllocation();
    const d = decodeStun(h.client.connectionBindRequest(0xdeadbeef as PeerConnectionId));
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.message.method).toBe(Method.ConnectionBind);
    expect(d.message.messageClass).toBe(MessageClass.Request);
    expect(readUint32(d.message, AttributeType.ConnectionId)).toBe(0xdeadbeef);
    expect(readString(d.message, AttributeType.Username)).toBe("alice");
    expect(readString(d.message, AttributeType.Realm)).toBe("turnpike.test");
  });
});
