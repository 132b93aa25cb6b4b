// What one worker's engine says to the others. Workers never share a socket or a relay-core;
// they post messages through the supervisor (workers/routing.ts forwards each `route` to
// its target), and this module is both ends of that conversation for one worker:
//
//   hand-over      RFC 6062 across workers (hand-over.ts): a data connection whose
//                  ConnectionBind names another worker's CONNECTION-ID is held here and its
//                  bytes relayed to the owner (`up`), which answers through it (`down`). The
//                  holder keeps counting it against its source until the owner says it
//                  authenticated, and closes it when the owner never confirms the adoption.
//   release-pin    this worker took a pinned port over from the same principal's stale
//                  allocation on another worker (relay-core's "release-pinned-port"): that
//                  worker is asked to end it (TurnServer.releasePinnedPort) and answers
//                  `pin-released`, after which the port is bound here.
//   reservation-   this worker took another worker's RESERVATION-TOKEN (relay-core's
//   taken          "reservation-taken"): that worker forgets the reservation
//                  (TurnServer.handleReservationTaken).
//   undeliverable  the supervisor's answer to a message for a worker that is restarting: a
//                  held connection closes, a release counts as done (a fresh engine holds
//                  nothing).
//   worker-gone    the supervisor's news that a worker died: what was held for it or adopted
//                  from it goes.
//
// The engine gives it what answering needs (LinkHandlers) and asks through handOver() and
// releasePinnedPort(); it knows nothing of the engine, the stream clients or the UDP paths.

import type { AllocationId } from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import type { WorkerContext } from "./context.js";
import {
  type ConnectionSocket,
  type HandOverMessage,
  holdForOwner,
  RemoteConnection,
} from "./hand-over.js";

/** Messages workers route to each other (through the supervisor). */
export type RoutedMessage =
  /** RFC 6062 hand-over: `up` from the worker holding the socket to the owner, else down. */
  | { readonly r: "hand-over"; readonly up: boolean; readonly m: HandOverMessage }
  /** The stale holder of a pinned port this worker took over, and the answer. */
  | ({ readonly r: "release-pin"; readonly id: number } & PinnedPortRelease)
  | { readonly r: "pin-released"; readonly id: number }
  /** This worker took the receiver's reservation `token`. */
  | { readonly r: "reservation-taken"; readonly token: Uint8Array }
  /** From the supervisor: `message` could not reach its worker (restarting). */
  | { readonly r: "undeliverable"; readonly message: RoutedMessage }
  /** A worker died: drop what was held for it or adopted from it. */
  | { readonly r: "worker-gone"; readonly index: number };

export type AdoptMessage = Extract<HandOverMessage, { k: "adopt" }>;

/** A stale holder of a pinned port, as relay-core's "release-pinned-port" names it. */
export interface PinnedPortRelease {
  readonly family: 4 | 6;
  readonly port: number;
  readonly allocation: AllocationId;
  readonly principal: string;
}

/** How long a pinned-port bind waits for the other worker's answer before it goes ahead. */
const PIN_RELEASE_TIMEOUT_MS = 2000;

export interface LinkHandlers {
  /**
   * Another worker hands over a data connection whose ConnectionBind names one of this
   * worker's CONNECTION-IDs: `remote` stands for its socket, `m.bytes` are the ConnectionBind
   * and what followed it.
   */
  adopt(remote: RemoteConnection, m: AdoptMessage): void;
  /** Another worker took this worker's reservation `token`. */
  reservationTaken(token: Uint8Array): void;
  /** Another worker took a pinned port over: end its stale holder here if it still holds it. */
  releasePinnedPort(release: PinnedPortRelease): void;
}

export class WorkerLink {
  /** Connections this worker holds for their owners, by hand-over id. */
  private readonly heldForOthers = new Map<
    number,
    {
      readonly owner: number;
      readonly socket: ConnectionSocket;
      readonly handle: (m: HandOverMessage) => void;
      /** Until the owner confirms the adoption (then its idle clock governs the connection). */
      deadline: NodeJS.Timeout | undefined;
    }
  >();
  /** Connections other workers hold for this one, by "from:hand-over id". */
  private readonly adopted = new Map<
    string,
    { readonly from: number; readonly remote: RemoteConnection }
  >();
  private nextHandOver = 1;
  /** Pinned-port releases asked of other workers, waiting for their answers. */
  private readonly pinReleases = new Map<
    number,
    { readonly timer: NodeJS.Timeout; readonly done: () => void }
  >();
  private nextPinRelease = 1;

  constructor(
    private readonly worker: WorkerContext,
    private readonly handlers: LinkHandlers,
    private readonly log: Logger,
  ) {
    worker.onRoute((from, message) => this.receive(from, message as RoutedMessage));
  }

  /**
   * relay-core handed this connection's ConnectionBind to worker `owner`: keep the (paused)
   * socket here and relay it to the owner, starting with `adopt.bytes`. `counted` hears when
   * the owner says the connection authenticated (false) or lost its allocation (true): it
   * counts against its source here, where it was admitted. Closed when the owner has not
   * confirmed the adoption within `deadlineMs` (it was restarting, say).
   */
  handOver(
    owner: number,
    socket: ConnectionSocket,
    adopt: Omit<AdoptMessage, "k" | "h">,
    connection: number,
    counted: (counted: boolean) => void,
    deadlineMs: number,
  ): void {
    const h = this.nextHandOver++;
    const handle = holdForOwner(
      socket,
      h,
      (m) => this.worker.route(owner, { r: "hand-over", up: true, m } satisfies RoutedMessage),
      adopt,
      {
        adopted: () => {
          const held = this.heldForOthers.get(h);
          if (held === undefined) return;
          clearTimeout(held.deadline);
          held.deadline = undefined;
        },
        counted,
      },
    );
    const deadline = setTimeout(() => {
      this.log.debug("handed-over connection never adopted; closed", { connection, owner });
      socket.destroy();
    }, deadlineMs);
    this.heldForOthers.set(h, { owner, socket, handle, deadline });
    socket.once("close", () => {
      clearTimeout(this.heldForOthers.get(h)?.deadline);
      this.heldForOthers.delete(h);
    });
    this.log.debug("connection handed over", { connection, owner });
  }

  /**
   * Asks worker `engine` to end the stale holder of a pinned port this worker took over.
   * `done()` once it answered (or was restarting, or did not answer within
   * PIN_RELEASE_TIMEOUT_MS): bind the port then.
   */
  releasePinnedPort(engine: number, release: PinnedPortRelease, done: () => void): void {
    const id = this.nextPinRelease++;
    const timer = setTimeout(() => this.pinReleased(id), PIN_RELEASE_TIMEOUT_MS);
    this.pinReleases.set(id, { timer, done });
    const { family, port, allocation, principal } = release;
    this.worker.route(engine, {
      r: "release-pin",
      id,
      family,
      port,
      allocation,
      principal,
    } satisfies RoutedMessage);
  }

  /** Tell worker `engine` that this worker took its reservation `token`. */
  reservationTaken(engine: number, token: Uint8Array): void {
    this.worker.route(engine, { r: "reservation-taken", token } satisfies RoutedMessage);
  }

  /** The engine closes: pending releases are not answered (relay-core is closed too). */
  close(): void {
    for (const ask of this.pinReleases.values()) clearTimeout(ask.timer);
    this.pinReleases.clear();
    for (const held of this.heldForOthers.values()) clearTimeout(held.deadline);
  }

  private pinReleased(id: number): void {
    const ask = this.pinReleases.get(id);
    if (ask === undefined) return;
    clearTimeout(ask.timer);
    this.pinReleases.delete(id);
    ask.done();
  }

  private receive(from: number, message: RoutedMessage): void {
    switch (message.r) {
      case "hand-over": {
        const m = message.m;
        if (!message.up) {
          this.heldForOthers.get(m.h)?.handle(m);
          return;
        }
        if (m.k === "adopt") {
          this.adopt(from, m);
          return;
        }
        this.adopted.get(`${from}:${m.h}`)?.remote.receive(m);
        return;
      }
      case "release-pin":
        this.handlers.releasePinnedPort(message);
        this.worker.route(from, { r: "pin-released", id: message.id } satisfies RoutedMessage);
        return;
      case "pin-released":
        this.pinReleased(message.id);
        return;
      case "reservation-taken":
        this.handlers.reservationTaken(message.token);
        return;
      case "undeliverable": {
        const lost = message.message;
        // A connection held for a worker that is not there (nobody will answer it), or adopted
        // from one (nobody holds its socket).
        if (lost.r === "hand-over" && lost.up) this.heldForOthers.get(lost.m.h)?.socket.destroy();
        if (lost.r === "hand-over" && !lost.up)
          this.adopted.get(`${from}:${lost.m.h}`)?.remote.destroy();
        // Nobody holds the pin there any more: bind it.
        if (lost.r === "release-pin") this.pinReleased(lost.id);
        return;
      }
      case "worker-gone":
        for (const held of this.heldForOthers.values()) {
          if (held.owner === message.index) held.socket.destroy();
        }
        for (const a of this.adopted.values()) if (a.from === message.index) a.remote.destroy();
        return;
    }
  }

  /** Another worker hands us a data connection whose ConnectionBind names one of our ids. */
  private adopt(from: number, m: AdoptMessage): void {
    const key = `${from}:${m.h}`;
    const remote = new RemoteConnection(
      m.h,
      (msg) =>
        this.worker.route(from, { r: "hand-over", up: false, m: msg } satisfies RoutedMessage),
      m.address,
      m.port,
    );
    this.adopted.set(key, { from, remote });
    remote.once("close", () => this.adopted.delete(key));
    remote.confirmAdopted();
    this.handlers.adopt(remote, m);
  }
}
