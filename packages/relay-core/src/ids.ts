/**
 * The identifiers the engines and their runtime exchange. Each is a plain number at run time
 * (no wrapper, nothing on the data path), branded at compile time so that one kind cannot be
 * passed where another is expected: `handleStreamClient(relay, ...)` or a CONNECTION-ID given
 * as a client connection does not type-check.
 *
 * Who issues which:
 * - the runtime: `ListenerId` (a UDP or TCP/TLS listening socket) and `ConnectionId` (an
 *   accepted TCP/TLS client connection); it brands its own counters with `listenerId()` and
 *   `connectionId()` at the boundary;
 * - the server: `RelayId` (one relayed transport address: a socket the runtime binds),
 *   `AllocationId`, `PeerConnectionId` (RFC 6062 §6.2.1 CONNECTION-ID: one TCP connection
 *   between the relay and a peer; the TurnClient reads the same ids from the wire) and
 *   `OffloadId` (one channel binding the runtime may relay in its own data path).
 */

declare const brand: unique symbol;
type Branded<Name extends string> = number & { readonly [brand]: Name };

/** A listening socket of the runtime (UDP, or the TCP/TLS listener a connection came in on). */
export type ListenerId = Branded<"ListenerId">;
/** A client's TCP or TLS connection to the server (RFC 8656 §3.1: an allocation lives on it). */
export type ConnectionId = Branded<"ConnectionId">;
/** One relayed transport address of an allocation: the relay socket the runtime binds. */
export type RelayId = Branded<"RelayId">;
/** An allocation, for logs and discovery. */
export type AllocationId = Branded<"AllocationId">;
/** RFC 6062 CONNECTION-ID: a TCP connection between the relay and a peer. */
export type PeerConnectionId = Branded<"PeerConnectionId">;
/**
 * One offloaded channel binding (TurnServerOptions.channelOffload): named from its
 * "offload-channel" output to its "end-offload", never reused by the same server.
 */
export type OffloadId = Branded<"OffloadId">;

export const listenerId = (id: number): ListenerId => id as ListenerId;
export const connectionId = (id: number): ConnectionId => id as ConnectionId;

/** `ClientEndpoint.connection` of a UDP client, which has no connection. */
export const NO_CONNECTION = -1 as ConnectionId;
