// Credential renewal: keep the allocation (and so the relayed address) across credential ttls.
// Once RENEW_FRACTION of their ttl has passed (credentials.ts), fresh credentials go into the
// live allocation: TurnClient.setCredentials, then a Refresh signed with them (RFC 8656 §8).
// turnpike-relay accepts them (it ties an allocation to the REST <user>); a relay that ties it
// to the USERNAME that created it answers 441 (RFC 8656 §7, coturn), and the tunnel re-allocates
// instead, a minute before the accepted credentials expire. Pure: deadlines are on the
// machine's clock and `now` is a parameter; the TurnClient (relay-core, sans-IO) is the one the
// lifecycle machine (../lifecycle.ts) hands in.

import type { TransportAddress, TurnClient } from "@turnpike/relay-core/client";
import type { TurnCredentials } from "../credentials.js";
import type { TunnelOutput } from "./outputs.js";

/** Re-allocate at the latest this long before credentials expire (a whole UDP transaction fits). */
export const EXPIRY_MARGIN_MS = 60_000;
/** After a failed credential fetch (or nothing newer yet), look again this much later. */
export const RENEW_RETRY_MS = 5_000;

/**
 * When a tunnel whose relay refused renewed credentials (441) must re-allocate: a minute before
 * `c` expire, or at `renewAt` when the ttl is so short that a minute is too much.
 */
export function reallocateBy(c: TurnCredentials): number {
  return Math.max(c.renewAt, c.expiresAt - EXPIRY_MARGIN_MS);
}

/** `c` with its wall-clock deadlines moved onto the machine's clock (`wallNow` is at `now`). */
export function toMachineClock(c: TurnCredentials, now: number, wallNow: number): TurnCredentials {
  const shift = now - wallNow;
  return {
    username: c.username,
    password: c.password,
    expiresAt: c.expiresAt + shift,
    renewAt: c.renewAt + shift,
  };
}

/** The next credential deadline, and what to do then. */
export interface CredentialStep {
  readonly at: number;
  /** Renew in place (fetch, setCredentials, Refresh), or release and allocate afresh. */
  readonly step: "renew" | "reallocate";
}

/** What decides the next credential step. */
export interface RenewalState {
  /** What the client signs with now. */
  readonly creds: TurnCredentials | undefined;
  /** A renewal is under way (fetching, or its Refresh in flight): no other step meanwhile. */
  readonly renewing: boolean;
  /** After a failed renewal: not before this (0 = none failed). */
  readonly renewRetryAt: number;
  /** This relay answered 441 to renewed credentials: re-allocate instead. */
  readonly inPlaceRefused: boolean;
  /** The tunnel is ready (only a ready allocation is renewed in place). */
  readonly ready: boolean;
}

/** The next credential deadline and what to do then; undefined = none. */
export function nextCredentialStep(s: RenewalState): CredentialStep | undefined {
  const c = s.creds;
  if (c === undefined || !Number.isFinite(c.expiresAt) || s.renewing) return undefined;
  const realloc = reallocateBy(c);
  if (s.inPlaceRefused || !s.ready) return { at: realloc, step: "reallocate" };
  const renew = Math.max(c.renewAt, s.renewRetryAt);
  return s.renewRetryAt === 0 || renew < realloc
    ? { at: renew, step: "renew" }
    : { at: realloc, step: "reallocate" };
}

/** One tunnel's credentials across its allocations, and the renewal in flight. */
export class CredentialRenewal {
  /** What the client signs with now. */
  #creds: TurnCredentials | undefined;
  /** What the relay accepted for the current allocation (at Allocate or a renewal). */
  #allocCreds: TurnCredentials | undefined;
  /** Renewed credentials swapped into the client, waiting for the Refresh that tries them. */
  #pendingCreds: TurnCredentials | undefined;
  /** Renewed credentials waiting for the Refresh in flight (a keep-alive) to be answered. */
  #queuedCreds: TurnCredentials | undefined;
  #renewing = false;
  #renewRetryAt = 0;
  /** This relay answered 441 to renewed credentials (coturn): re-allocate instead, from now on. */
  #inPlaceRefused = false;
  #renewals = 0;

  /** Credential renewals that kept the allocation (and so the relayed address). */
  get renewals(): number {
    return this.#renewals;
  }

  get inPlaceRefused(): boolean {
    return this.#inPlaceRefused;
  }

  /** A renewal is under way: a refused Refresh re-allocates at once. */
  get renewing(): boolean {
    return this.#renewing;
  }

  /** The next credential deadline and what to do then, for a tunnel `ready` or not. */
  step(ready: boolean): CredentialStep | undefined {
    return nextCredentialStep({
      creds: this.#creds,
      renewing: this.#renewing,
      renewRetryAt: this.#renewRetryAt,
      inPlaceRefused: this.#inPlaceRefused,
      ready,
    });
  }

  /** A new allocation is made with `c`. */
  allocating(c: TurnCredentials): void {
    this.#creds = c;
    this.#allocCreds = c;
    this.#renewRetryAt = 0;
  }

  /** The allocation is gone: nothing is being renewed any more. */
  dropped(): void {
    this.#renewing = false;
    this.#pendingCreds = undefined;
    this.#queuedCreds = undefined;
  }

  /** The renewal's credential fetch starts. */
  begin(): void {
    this.#renewing = true;
  }

  /** The renewal's credential fetch failed: look again a little later. */
  fetchFailed(now: number): void {
    this.#renewing = false;
    this.#renewRetryAt = now + RENEW_RETRY_MS;
  }

  /**
   * Fresh credentials into the live allocation: setCredentials, then a Refresh signed with them.
   * A relay that answers 441 makes the client go back to the creating credentials, which
   * `check` notices.
   */
  renewWith(client: TurnClient, fresh: TurnCredentials, ready: boolean, now: number): void {
    if (!ready || fresh.username === this.#creds?.username) {
      // Nothing newer yet (or not allocated any more): look again a little later.
      this.fetchFailed(now);
      return;
    }
    client.setCredentials(fresh.username, fresh.password);
    // RFC 8656 §8: the Refresh that carries the new USERNAME; lifetime as before.
    if (!client.refresh(now)) {
      // A Refresh with the current credentials is in flight (a keep-alive): its answer would
      // say nothing about the new ones. Put the current ones back and try the new ones as soon
      // as it is answered (still renewing: no re-allocation meanwhile, even with a ttl so
      // short that renewing and re-allocating are due at the same instant).
      const current = this.#creds!;
      client.setCredentials(current.username, current.password);
      this.#queuedCreds = fresh;
      return;
    }
    this.#pendingCreds = fresh;
  }

  /**
   * A Refresh succeeded: try the queued credentials now, or tell whether the relay took the
   * renewed ones (`relayed` is named in "renewed").
   */
  refreshed(
    client: TurnClient,
    ready: boolean,
    relayed: TransportAddress | undefined,
    now: number,
  ): TunnelOutput | undefined {
    const queued = this.#queuedCreds;
    if (queued === undefined) return this.check(client, relayed);
    this.#queuedCreds = undefined;
    this.renewWith(client, queued, ready, now);
    return undefined;
  }

  /** Did the relay take the renewed credentials? (After a Refresh success, and on every timer.) */
  check(client: TurnClient, relayed: TransportAddress | undefined): TunnelOutput | undefined {
    if (client.usesAllocationCredentials) {
      // 441 to the renewed USERNAME (coturn): sign everything with the accepted credentials
      // again (ConnectionBind included) and re-allocate before they expire.
      const a = this.#allocCreds;
      this.#inPlaceRefused = true;
      this.#renewing = false;
      this.#pendingCreds = undefined;
      if (a !== undefined) {
        client.setCredentials(a.username, a.password);
        this.#creds = a;
      }
      return {
        type: "renewal-refused",
        reallocateAt: a === undefined ? undefined : reallocateBy(a),
      };
    }
    const fresh = this.#pendingCreds;
    if (!this.#renewing || fresh === undefined) return undefined;
    this.#creds = fresh;
    this.#allocCreds = fresh;
    this.#pendingCreds = undefined;
    this.#renewing = false;
    this.#renewRetryAt = 0;
    this.#renewals++;
    return { type: "renewed", renewals: this.#renewals, relayed };
  }
}
