// What one worker's engine says to the others. Workers never share a socket or a relay-core;
// they post messages through the supervisor (workers/pool.ts relays each `route` to its
// target), and this module is both ends of that conversation for one worker:
//
//   hand-over      RFC 6062 across workers (hand-over.ts): a data connection whose
//                  ConnectionBind names another worker's CONNECTION-ID is held here and its
//                  bytes relayed to the owner (`up`), which answers through it (`down`).
//   release-pin    a pinned relay port this worker could not bind may be held by another
//                  worker's stale allocation of the same principal: every other worker is
//                  asked to release it (TurnServer.releasePinnedPort) and answers
//                  `pin-released` with what it did.
//   worker-gone    the supervisor's news that a worker died: what was held for it or adopted
//                  from it goes.
//
// The engine gives it what answering needs (LinkHandlers) and asks through handOver() and
// releasePinnedPort(); it knows nothing of the engine, the stream clients or the UDP paths.

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
  /** A pinned port another worker must release for `principal`, and the answer. */
  | {
      readonly r: "release-pin";
      readonly id: number;
      readonly family: 4 | 6;
      readonly port: number;
      readonly principal: string;
    }
  | { readonly r: "pin-released"; readonly id: number; readonly result: PinRelease }
  /** A worker died: drop what was held for it or adopted from it. */
  | { readonly r: "worker-gone"; readonly index: number };

/** What TurnServer.releasePinnedPort did: released it, another principal holds it, or nobody. */
export type PinRelease = "released" | "other" | "none";

export type AdoptMessage = Extract<HandOverMessage, { k: "adopt" }>;

/** How long a pinned-port release waits for every other worker's answer. */
const PIN_RELEASE_TIMEOUT_MS = 2000;

export interface LinkHandlers {
  /**
   * Another worker hands over a data connection whose ConnectionBind names one of this
   * worker's CONNECTION-IDs: `remote` stands for its socket, `m.bytes` are the ConnectionBind
   * and what followed it.
   */
  adopt(remote: RemoteConnection, m: AdoptMessage): void;
  /** Another worker asks to release pinned `port` if `principal` holds it here. */
  releasePinnedPort(family: 4 | 6, port: number, principal: string): PinRelease;
}

export class WorkerLink {
  /** Connections this worker holds for their owners, by hand-over id. */
  private readonly heldForOthers = new Map<
    number,
    {
      readonly owner: number;
      readonly socket: ConnectionSocket;
      readonly handle: (m: HandOverMessage) => void;
    }
  >();
  /** Connections other workers hold for this one, by "from:hand-over id". */
  private readonly adopted = new Map<
    string,
    { readonly from: number; readonly remote: RemoteConnection }
  >();
  private nextHandOver = 1;
  /** Pinned-port releases asked of the other workers, waiting for their answers. */
  private readonly pinReleases = new Map<
    number,
    {
      waiting: number;
      other: boolean;
      readonly timer: NodeJS.Timeout;
      readonly done: (free: boolean) => void;
    }
  >();
  private nextPinRelease = 1;

  constructor(
    private readonly worker: WorkerContext,
    private readonly handlers: LinkHandlers,
    private readonly log: Logger,
  ) {
    worker.onRoute((from, message) => this.receive(from, message as RoutedMessage));
  }

  /** Other workers exist that may hold what this one could not bind. */
  get hasOthers(): boolean {
    return this.worker.count > 1;
  }

  /**
   * relay-core handed this connection's ConnectionBind to worker `owner`: keep the (paused)
   * socket here and relay it to the owner, starting with `adopt.bytes`.
   */
  handOver(
    owner: number,
    socket: ConnectionSocket,
    adopt: Omit<AdoptMessage, "k" | "h">,
    connection: number,
  ): void {
    const h = this.nextHandOver++;
    const handle = holdForOwner(
      socket,
      h,
      (m) => this.worker.route(owner, { r: "hand-over", up: true, m } satisfies RoutedMessage),
      adopt,
    );
    this.heldForOthers.set(h, { owner, socket, handle });
    socket.once("close", () => this.heldForOthers.delete(h));
    this.log.debug("connection handed over", { connection, owner });
  }

  /**
   * Asks every other worker to release pinned `port` if `principal`'s stale allocation holds
   * it. `done(true)`: no other principal holds it (released, or free by now): bind again.
   * `done(false)`: another principal holds it, or not every worker answered in time.
   */
  releasePinnedPort(
    family: 4 | 6,
    port: number,
    principal: string,
    done: (free: boolean) => void,
  ): void {
    const w = this.worker;
    const id = this.nextPinRelease++;
    const timer = setTimeout(() => {
      this.pinReleases.delete(id);
      done(false);
    }, PIN_RELEASE_TIMEOUT_MS);
    this.pinReleases.set(id, { waiting: w.count - 1, other: false, timer, done });
    for (let i = 0; i < w.count; i++) {
      if (i === w.index) continue;
      w.route(i, { r: "release-pin", id, family, port, principal } satisfies RoutedMessage);
    }
  }

  /** The engine closes: pending releases are not answered (relay-core is closed too). */
  close(): void {
    for (const ask of this.pinReleases.values()) clearTimeout(ask.timer);
    this.pinReleases.clear();
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
      case "release-pin": {
        const result = this.handlers.releasePinnedPort(
          message.family,
          message.port,
          message.principal,
        );
        this.worker.route(from, {
          r: "pin-released",
          id: message.id,
          result,
        } satisfies RoutedMessage);
        return;
      }
      case "pin-released": {
        const ask = this.pinReleases.get(message.id);
        if (ask === undefined) return;
        if (message.result === "other") ask.other = true;
        if (--ask.waiting > 0) return;
        clearTimeout(ask.timer);
        this.pinReleases.delete(message.id);
        ask.done(!ask.other);
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
    this.handlers.adopt(remote, m);
  }
}
