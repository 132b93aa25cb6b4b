// relay-core's outputs, carried out: one switch on the output's type, each case handing the
// work to the room that owns the resource. The engine's loop (driver.ts) drains
// `pollOutput()` through here, in order: an output may depend on the one before it (a
// ConnectionBind success is transmitted before `bind-connection` turns the connection into a
// pipe). The outputs are listed in relay-core's server/types.ts.

import type { TurnServerOutput } from "@turnpike/relay-core";
import type { KernelOffload } from "../kernel/offload.js";
import type { StreamClients } from "../stream/clients.js";
import type { PeerConnections } from "../stream/peers.js";
import type { UdpPath } from "../udp/udp-path.js";
import type { RelaySockets } from "./relay-sockets.js";
import type { Report } from "./report.js";

/** Who carries out what. */
export interface OutputRooms {
  /** UDP clients' control messages. */
  readonly udp: UdpPath;
  /** TCP/TLS client connections: control messages, authentication, closing, hand-over. */
  readonly clients: StreamClients;
  /** RFC 6062 peer connections and pipes. */
  readonly peers: PeerConnections;
  /** Relay sockets of either protocol: open (and answer relay-core) and close. */
  readonly relaySockets: RelaySockets;
  /** Telemetry and log lines. */
  readonly report: Report;
  /**
   * The kernel data path's bindings (kernel/offload.ts), when it runs; relay-core sends
   * offload outputs only then (engine/server-options.ts, channelOffload).
   */
  readonly offload: KernelOffload | undefined;
  /** An allocation ended: a drain may be complete (driver.ts). */
  allocationEnded(): void;
}

export function executeOutput(o: TurnServerOutput, rooms: OutputRooms): void {
  switch (o.type) {
    case "transmit":
      if (o.client.transport === "udp") rooms.udp.sendControl(o.client, o.data);
      else rooms.clients.sendControl(o.client.connection, o.data);
      rooms.report.response(o);
      return;
    case "open-relay":
      rooms.relaySockets.open(o);
      return;
    case "close-relay":
      rooms.relaySockets.close(o.relay);
      return;
    case "release-pinned-port":
      rooms.relaySockets.releaseElsewhere(o);
      return;
    case "reservation-taken":
      rooms.relaySockets.reservationTaken(o);
      return;
    case "connect-peer":
      rooms.peers.connect(o.peerConnection, o.relay, o.family, o.address, o.port);
      return;
    case "bind-connection":
      rooms.peers.bind(o.peerConnection, o.dataConnection);
      return;
    case "close-peer-connection":
      rooms.peers.close(o.peerConnection);
      return;
    case "hand-over-connection":
      rooms.clients.handOverTo(o.connection, o.owner);
      return;
    case "close-connection":
      rooms.clients.close(o.connection);
      return;
    case "allocation-created":
      if (o.client.transport !== "udp") rooms.clients.setAuthenticated(o.client.connection, true);
      rooms.report.allocationCreated(o);
      return;
    case "offload-channel":
      // Before the ChannelBind success that follows it: the client's next ChannelData finds
      // the binding in the kernel.
      rooms.offload?.offload(o);
      return;
    case "end-offload":
      rooms.offload?.end(o.offload);
      return;
    case "allocation-ended":
      if (o.client.transport !== "udp") rooms.clients.setAuthenticated(o.client.connection, false);
      rooms.report.allocationEnded(o);
      rooms.allocationEnded();
      return;
  }
}
