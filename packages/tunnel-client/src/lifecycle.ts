// The decisions of one tunnel's life, as a pure state machine: when to fetch credentials, open
// the control connection, allocate, call the tunnel ready, renew credentials in place or
// re-allocate, give up on a silent relay, back off and try again, release for an access window,
// and whether a pinned relay port is this tunnel's to take. It keeps relay-core's sans-IO
// contract (ARCHITECTURE.md, "The sans-IO contract"): inputs carry `now` (monotonic ms of the
// driver's choosing), outputs are polled, and it opens no socket, arms no timer, reads no clock
// and draws no randomness of its own (the backoff jitter and the TurnClient's RandomSource are
// injected). tunnel.ts is the driver that executes it; test/lifecycle.test.ts runs it against
// relay-core's TurnServer in simulated time.
//
// Call order for the driver, after every input (a handle* call, start/stop/closeWindow/reopen):
// drain pollOutput() (transmit -> write to the control connection; fetch-credentials and
// connect -> start that I/O and report back with the attempt it names; disconnect -> close the
// control connection and everything of this allocation; the rest are events), then arm one
// timer at pollTimeout() and call handleTimeout(now) when it fires. The data path (channel
// binds, Send indications, ConnectionBind on data connections) calls `client` directly; drain
// pollOutput() after that too.
//
// States (visible in /list):
//   connecting    credentials and the control connection on their way
//   allocating    Allocate sent (credentials, 401/nonce dance inside the TurnClient)
//   ready         relayed address live, permissions installed for the allowed peers
//   backoff       the relay was lost; waiting a full-jitter delay to try again
//   refused       the relay refused this tunnel (credentials 401/403, a peer's permission):
//                 waiting the same way; lastError says why, the log said it once (WARN)
//   closed-window outside every access window: allocation released on purpose
//   stopped       removed (DELETE /expose or shutdown)
// ("resolving" is the supervisor's: a relay name with no address yet has no tunnel.)

import {
  formatTransportAddress,
  Method,
  pinOfUsername,
  type RandomSource,
  type TransportAddress,
  TurnClient,
  type TurnClientEvent,
  type TurnData,
} from "@turnpike/relay-core";
import { Backoff } from "./backoff.js";
import type { TurnCredentials } from "./credentials.js";
import type { PinClaims } from "./pins.js";
import { REDIRECT_WINDOW_MS, Redirects, type RelayAddress } from "./redirects.js";
import type { ControlTransport } from "./uri.js";

export type TunnelState =
  | "resolving"
  | "connecting"
  | "allocating"
  | "ready"
  | "backoff"
  | "refused"
  | "closed-window"
  | "stopped";

export const TUNNEL_STATES: readonly TunnelState[] = [
  "resolving",
  "connecting",
  "allocating",
  "ready",
  "backoff",
  "refused",
  "closed-window",
  "stopped",
];

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

export interface TunnelLifecycleOptions {
  /** The service this tunnel exposes (named in a pinned-port refusal). */
  readonly serviceName: string;
  /** The relay address this tunnel allocates on (with the port, the key of a pin claim). */
  readonly relayIp: string;
  /** The relay's port (its ALTERNATE-SERVER redirects are followed from there: redirects.ts). */
  readonly relayPort: number;
  readonly family: 4 | 6;
  /** How the control connection runs (RFC 6062 needs a stream: tcp or tls). */
  readonly control: ControlTransport;
  /** REQUESTED-TRANSPORT: what the relayed address carries. */
  readonly requestedTransport: "udp" | "tcp";
  /** Peer IPs to install permissions for (RFC 8656 §9); ready once all are answered. */
  readonly allowedPeers: readonly string[];
  readonly random: RandomSource;
  /** A uniform number in [0, 1) for backoff jitter. */
  readonly jitter: () => number;
  /** Seconds between keep-alives; silence from the relay for twice this = reconnect. */
  readonly keepalive: number;
  /** Seconds: the first backoff window, and the largest. */
  readonly backoffBase: number;
  readonly backoffMax: number;
  /** Seconds of allocation lifetime to ask for. */
  readonly lifetime: number;
  readonly software: string;
  /** Which tunnel of this process serves each pinned relay port (shared by all of them). */
  readonly pins?: PinClaims;
}

/** What the driver must do or may tell people, in order. */
export type TunnelOutput =
  /** Bytes for the control connection. */
  | { readonly type: "transmit"; readonly bytes: Uint8Array }
  /** Get credentials; report with handleCredentials / handleCredentialsFailed. */
  | { readonly type: "fetch-credentials"; readonly attempt: number }
  /**
   * Open the control connection to `relay` (the tunnel's own, or where a draining one sent it),
   * resolving the target first for a UDP service; report with handleConnected /
   * handleTransportFailed, and feed what arrives to handleInput.
   */
  | { readonly type: "connect"; readonly attempt: number; readonly relay: RelayAddress }
  /**
   * Close the control connection (gracefully after the transmits before this one when
   * `release`, at once otherwise) and everything of the allocation (peer flows, data pipes).
   */
  | { readonly type: "disconnect"; readonly release: boolean }
  | { readonly type: "ready"; readonly relayed: TransportAddress; readonly lifetime: number }
  | {
      readonly type: "down";
      readonly reason: string;
      readonly delayMs: number;
      /** Failures in a row (the backoff attempt). */
      readonly failures: number;
      readonly wasReady: boolean;
      /** The relay refused the tunnel (state "refused"), rather than being lost. */
      readonly refused: boolean;
      /** The same refusal as the failure before: said already. */
      readonly repeated: boolean;
    }
  /** A draining relay sent the tunnel elsewhere (300 Try Alternate, RFC 8489 §10). */
  | { readonly type: "redirected"; readonly from: RelayAddress; readonly to: RelayAddress }
  | { readonly type: "window-closed" }
  | { readonly type: "window-opened" }
  | { readonly type: "reallocating"; readonly refusedInPlace: boolean }
  | {
      readonly type: "renewed";
      readonly renewals: number;
      readonly relayed: TransportAddress | undefined;
    }
  /** 441 to renewed credentials; `reallocateAt` (on the machine's clock) is when it re-allocates. */
  | { readonly type: "renewal-refused"; readonly reallocateAt: number | undefined }
  | { readonly type: "renewal-failed"; readonly error: string }
  /** The relay gave a dynamic port to credentials that pin one (coturn); said once. */
  | {
      readonly type: "pin-ignored";
      readonly pinnedPort: number;
      readonly relayed: TransportAddress;
    }
  /** The data path's business, passed on as the TurnClient said it. */
  | Extract<
      TurnClientEvent,
      { type: "channel-bound" | "channel-bind-failed" | "connection-attempt" }
    >;

export class TunnelLifecycle {
  #state: TunnelState = "connecting";
  /** Bumped on every (re)connect and teardown: reports naming an older attempt are ignored. */
  #attempt = 0;
  #client: TurnClient | undefined;
  #relayed: TransportAddress | undefined;
  #lifetime = 0;
  #lastError: string | undefined;
  #reconnects = 0;
  #renewals = 0;
  #pinnedPort: number | undefined;
  #pinIgnoredSaid = false;
  #pendingPermissions = new Set<string>();
  /** When the relay last sent anything (dead-relay detection). */
  #lastRx = 0;
  /** In backoff: when to try again. */
  #retryAt = Number.POSITIVE_INFINITY;
  /** What the outstanding fetch-credentials is for. */
  #fetching: "connect" | "renew" | undefined;
  // Credentials, with their deadlines on this machine's clock (see toMachineClock).
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
  /** This relay answered 441 to renewed credentials (coturn): re-allocate instead. */
  #inPlaceRefused = false;
  /** The reason of the last refusal, until the tunnel is ready again (said once). */
  #lastRefusal: string | undefined;
  /** Where to allocate: the relay address, or where a draining relay redirected to. */
  readonly #redirects: Redirects;
  readonly #backoff: Backoff;
  readonly #deadAfterMs: number;
  /** The `now` of the latest input, for events found while outputs are drained. */
  #lastNow = 0;
  readonly #out: TunnelOutput[] = [];

  constructor(private readonly o: TunnelLifecycleOptions) {
    this.#backoff = new Backoff({
      baseMs: o.backoffBase * 1000,
      capMs: o.backoffMax * 1000,
      random: o.jitter,
    });
    // The client sends a Binding keep-alive every `keepalive` seconds, so silence for twice
    // that means the relay (or the path) is gone.
    this.#deadAfterMs = o.keepalive * 2000;
    this.#redirects = new Redirects({ family: o.family, ip: o.relayIp, port: o.relayPort });
  }

  // -------------------------------------------------------------------------------------------
  // What the driver and /list read

  get state(): TunnelState {
    return this.#state;
  }

  get serviceName(): string {
    return this.o.serviceName;
  }

  /** The attempt the current control connection belongs to. */
  get attempt(): number {
    return this.#attempt;
  }

  /** The TurnClient of the current attempt, for the data path; undefined between attempts. */
  get client(): TurnClient | undefined {
    return this.#client;
  }

  get relayedAddress(): TransportAddress | undefined {
    return this.#relayed;
  }

  /** The relay this tunnel allocates on now: its own, or where a draining one sent it. */
  get relay(): RelayAddress {
    return this.#redirects.current;
  }

  /** The relay port the credentials pin, if they do (auth/pinned-username.ts in relay-core). */
  get pinnedPort(): number | undefined {
    return this.#pinnedPort;
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** Times the relay was lost or refused (not windows closing, not planned re-allocations). */
  get reconnects(): number {
    return this.#reconnects;
  }

  /** Credential renewals that kept the allocation (and so the relayed address). */
  get credentialRenewals(): number {
    return this.#renewals;
  }

  // -------------------------------------------------------------------------------------------
  // Inputs: commands

  start(): void {
    if (this.#state === "stopped") return;
    this.#connect();
  }

  /** Release the allocation and close everything; the tunnel is done. */
  stop(now: number): void {
    this.#teardown(true, now);
    this.#state = "stopped";
  }

  /** Outside the access windows: release, and stay idle until `reopen()`. */
  closeWindow(now: number): void {
    if (this.#state === "closed-window" || this.#state === "stopped") return;
    this.#teardown(true, now);
    this.#state = "closed-window";
    this.#out.push({ type: "window-closed" });
  }

  /** Created while the window is closed: nothing to release, just show the state. */
  closeWindowIdle(): void {
    this.#state = "closed-window";
  }

  reopen(): void {
    if (this.#state !== "closed-window") return;
    this.#backoff.reset();
    this.#redirects.goHome();
    this.#out.push({ type: "window-opened" });
    this.#connect();
  }

  // -------------------------------------------------------------------------------------------
  // Inputs: what the driver's I/O reports

  /**
   * The credentials a fetch-credentials asked for. Their deadlines are wall-clock ms
   * (`wallNow` is the wall clock at `now`); the machine moves them onto its own clock.
   */
  handleCredentials(attempt: number, fetched: TurnCredentials, now: number, wallNow: number): void {
    if (attempt !== this.#attempt || this.#fetching === undefined) return;
    const purpose = this.#fetching;
    this.#fetching = undefined;
    const creds = toMachineClock(fetched, now, wallNow);
    if (purpose === "renew") this.#renewWith(creds, now);
    else this.#allocateWith(creds, now);
    this.#settle(now);
  }

  handleCredentialsFailed(attempt: number, message: string, now: number): void {
    if (attempt !== this.#attempt || this.#fetching === undefined) return;
    const purpose = this.#fetching;
    this.#fetching = undefined;
    if (purpose === "connect") {
      this.#fail(`credentials: ${message}`, now);
      return;
    }
    this.#renewing = false;
    this.#renewRetryAt = now + RENEW_RETRY_MS;
    this.#lastError = `renewing credentials: ${message}`;
    this.#out.push({ type: "renewal-failed", error: message });
  }

  /** The control connection of `attempt` is open: allocate. */
  handleConnected(attempt: number, now: number): void {
    const client = this.#client;
    if (attempt !== this.#attempt || client === undefined) return;
    this.#state = "allocating";
    this.#lastRx = now;
    client.allocate(now);
    this.#settle(now);
  }

  /** The control connection (or what it needs: the target's address) failed or closed. */
  handleTransportFailed(attempt: number, reason: string, now: number): void {
    if (attempt !== this.#attempt) return;
    this.#fail(reason, now);
  }

  /**
   * One datagram, or one frame cut by StreamFramer, from the relay. Control messages update
   * the machine; peer data (ChannelData, Data indications) comes back as the client's reused
   * view, valid until the next call into the client.
   */
  handleInput(attempt: number, bytes: Uint8Array, now: number): TurnData | undefined {
    const client = this.#client;
    if (attempt !== this.#attempt || client === undefined) return undefined;
    this.#lastRx = now;
    const data = client.handleInput(bytes, now);
    this.#settle(now);
    return data === undefined || data.peer === undefined ? undefined : data;
  }

  handleTimeout(now: number): void {
    if (this.#waiting()) {
      if (now >= this.#retryAt) this.#connect();
      return;
    }
    const client = this.#client;
    if (client === undefined) return;
    if (now - this.#lastRx >= this.#deadAfterMs) {
      this.#fail(`no answer from the relay for ${this.o.keepalive * 2} s`, now);
      return;
    }
    if (client.usesAllocationCredentials) this.#checkRenewal();
    const step = this.#credentialStep();
    if (step !== undefined && step.at <= now) {
      if (step.step === "reallocate") {
        // The relay ties the allocation to the USERNAME that created it (RFC 8656 §7, 441), or
        // renewing failed: fresh credentials mean a fresh allocation (and relayed address).
        this.#out.push({ type: "reallocating", refusedInPlace: this.#inPlaceRefused });
        this.#teardown(true, now);
        this.#connect();
        return;
      }
      this.#renewing = true;
      this.#fetching = "renew";
      this.#out.push({ type: "fetch-credentials", attempt: this.#attempt });
    }
    client.handleTimeout(now);
    this.#settle(now);
  }

  // -------------------------------------------------------------------------------------------
  // Outputs

  pollOutput(): TunnelOutput | undefined {
    // What the data path queued on the client (ChannelBind, its refreshes) goes out too; an
    // event among it is acted on at the last input's instant.
    while (this.#out.length === 0) {
      const client = this.#client;
      const o = client?.pollOutput();
      if (o === undefined) return undefined;
      if (o.type === "transmit") return { type: "transmit", bytes: o.data };
      this.#onClientEvent(o, this.#lastNow);
    }
    return this.#out.shift();
  }

  /** The next instant handleTimeout has work, or undefined. */
  pollTimeout(): number | undefined {
    if (this.#waiting()) {
      return Number.isFinite(this.#retryAt) ? this.#retryAt : undefined;
    }
    const client = this.#client;
    if (client === undefined) return undefined;
    let at = Math.min(
      client.pollTimeout() ?? Number.POSITIVE_INFINITY,
      this.#lastRx + this.#deadAfterMs,
    );
    const step = this.#credentialStep();
    if (step !== undefined) at = Math.min(at, step.at);
    return at;
  }

  // -------------------------------------------------------------------------------------------
  // Connection lifecycle

  /** Between attempts: lost (backoff) or refused, waiting for #retryAt. */
  #waiting(): boolean {
    return (this.#state === "backoff" || this.#state === "refused") && this.#client === undefined;
  }

  #connect(): void {
    this.#attempt++;
    this.#state = "connecting";
    this.#retryAt = Number.POSITIVE_INFINITY;
    this.#fetching = "connect";
    this.#out.push({ type: "fetch-credentials", attempt: this.#attempt });
  }

  #allocateWith(creds: TurnCredentials, now: number): void {
    this.#pinnedPort = pinOfUsername(creds.username)?.port;
    if (this.#pinnedPort !== undefined) {
      const holder = this.o.pins?.claim(`${this.o.relayIp}|${this.#pinnedPort}`, this);
      if (holder !== undefined) {
        this.#fail(
          `pinned port ${this.#pinnedPort} on ${this.o.relayIp} is already served by service "${holder.serviceName}": one service per pinned credential`,
          now,
        );
        return;
      }
    }
    this.#creds = creds;
    this.#allocCreds = creds;
    this.#renewRetryAt = 0;
    this.#client = new TurnClient({
      username: creds.username,
      password: creds.password,
      random: this.o.random,
      transport: this.o.control,
      requestedTransport: this.o.requestedTransport,
      family: this.#redirects.current.family,
      lifetime: this.o.lifetime,
      software: this.o.software,
      keepaliveInterval: this.o.keepalive,
      // A relay restarted between two keep-alives (a deploy) has forgotten the allocation but
      // answers a Binding all the same: a Refresh gets 437 and the tunnel allocates again
      // within one interval, instead of serving nothing until the next scheduled refresh.
      keepaliveRequest: "refresh",
    });
    this.#lastRx = now;
    this.#out.push({ type: "connect", attempt: this.#attempt, relay: this.#redirects.current });
  }

  /**
   * Lost the relay, or it refused the tunnel (`refused`): tear down and try again after a
   * backoff delay, on the tunnel's own relay address. A refusal keeps the same rhythm (the
   * operator may lift it: a revocation withdrawn, the relay's peer policy changed) and is
   * marked `repeated` when it is the one said last, so that the log says it once.
   */
  #fail(reason: string, now: number, immediate = false, refused = false): void {
    if (this.#state === "stopped" || this.#state === "closed-window") return;
    const wasReady = this.#state === "ready";
    this.#lastError = reason;
    this.#teardown(false, now);
    this.#redirects.goHome();
    const delayMs = immediate ? 0 : this.#backoff.next(now);
    this.#reconnects++;
    this.#state = refused ? "refused" : "backoff";
    this.#retryAt = now + delayMs;
    const repeated = refused && this.#lastRefusal === reason;
    this.#lastRefusal = refused ? reason : undefined;
    this.#out.push({
      type: "down",
      reason,
      delayMs,
      failures: this.#backoff.attempts,
      wasReady,
      refused,
      repeated,
    });
  }

  /**
   * RFC 8489 §10: a draining relay's 300 with ALTERNATE-SERVER is followed at once, unless that
   * relay redirected this tunnel within the last 5 minutes (redirects.ts: no loops). Returns
   * false when it is not followed.
   */
  #redirect(to: TransportAddress, now: number): boolean {
    const from = this.#redirects.current;
    const target = { family: to.family, ip: to.address, port: to.port };
    if (!this.#redirects.follow(target, now)) return false;
    this.#teardown(false, now);
    this.#out.push({ type: "redirected", from, to: target });
    this.#connect();
    return true;
  }

  #teardown(release: boolean, now: number): void {
    this.#attempt++;
    this.#retryAt = Number.POSITIVE_INFINITY;
    this.#fetching = undefined;
    const client = this.#client;
    // Any state that holds an allocation ("allocating" with permissions pending included).
    if (release && client !== undefined && this.#relayed !== undefined) {
      // Best effort: Refresh LIFETIME 0 (RFC 8656 §8) so the relayed address goes at once.
      client.release(now);
      // Its transmits go out; its events no longer matter (the client is being dropped).
      for (let o = client.pollOutput(); o !== undefined; o = client.pollOutput()) {
        if (o.type === "transmit") this.#out.push({ type: "transmit", bytes: o.data });
      }
    }
    this.#client = undefined;
    this.#relayed = undefined;
    this.#renewing = false;
    this.#pendingCreds = undefined;
    this.#queuedCreds = undefined;
    this.#out.push({ type: "disconnect", release });
  }

  /** Moves the client's transmits and events out; events may queue more (allocated -> permissions). */
  #settle(now: number): void {
    this.#lastNow = now;
    const client = this.#client;
    // In order: transmits out, events acted on (an event may queue more: allocated ->
    // permissions, drained by the same loop).
    for (let o = client?.pollOutput(); o !== undefined; o = client?.pollOutput()) {
      if (o.type === "transmit") this.#out.push({ type: "transmit", bytes: o.data });
      else {
        this.#onClientEvent(o, now);
        if (this.#client !== client) return; // the event tore the tunnel down
      }
    }
  }

  #onClientEvent(e: TurnClientEvent, now: number): void {
    switch (e.type) {
      case "allocated": {
        this.#relayed = e.relayed;
        const pinned = this.#pinnedPort;
        if (pinned !== undefined && e.relayed.port !== pinned && !this.#pinIgnoredSaid) {
          // coturn, or any relay that reads pinned credentials as plain REST ones: the tunnel
          // still serves, but the platform must look the address up (the tunnel's /list).
          this.#pinIgnoredSaid = true;
          this.#out.push({ type: "pin-ignored", pinnedPort: pinned, relayed: e.relayed });
        }
        this.#lastError = undefined;
        this.#backoff.connected(now);
        this.#lifetime = e.lifetime;
        // "ready" means reachable: only once the relay confirmed the permissions (RFC 8656 §9),
        // since it drops peer traffic until then.
        this.#pendingPermissions = new Set(this.o.allowedPeers);
        for (const ip of this.o.allowedPeers) this.#client?.createPermission(ip, now);
        this.#maybeReady();
        return;
      }
      case "permission-created":
        this.#pendingPermissions.delete(e.peerIp);
        this.#maybeReady();
        return;
      case "permission-failed":
        // A peer the relay will not let in: the service is not what was asked for, so it is
        // not ready (a relay's peer policy refuses loopback and private peers by default).
        this.#fail(
          `permission for ${e.peerIp} refused: ${e.code} ${e.reason}${e.code === 403 ? peerPolicyHint(e.peerIp) : ""}`,
          now,
          false,
          true,
        );
        return;
      case "allocate-failed":
        if (e.code === 300 && e.alternateServer !== undefined) {
          if (this.#redirect(e.alternateServer, now)) return;
          this.#fail(
            `allocate failed: 300 ${e.reason}: ${formatTransportAddress(e.alternateServer)} redirected this tunnel within the last ${REDIRECT_WINDOW_MS / 60_000} minutes, not followed again`,
            now,
          );
          return;
        }
        // 401 to credentials just signed (a wrong or expired key), 403 (revoked, a pinned port
        // outside the range or held by another user): refused, not lost.
        this.#fail(
          `allocate failed: ${e.code} ${e.reason}`,
          now,
          false,
          e.code === 401 || e.code === 403,
        );
        return;
      case "refreshed": {
        const queued = this.#queuedCreds;
        if (queued !== undefined) {
          this.#queuedCreds = undefined;
          this.#renewWith(queued, now);
          return;
        }
        this.#checkRenewal();
        return;
      }
      case "refresh-failed":
        // A refused renewal must not wait out a backoff delay: re-allocate at once.
        this.#fail(`refresh failed: ${e.code} ${e.reason}`, now, this.#renewing);
        return;
      case "transaction-timeout": {
        const what =
          e.method === Method.Binding
            ? "keep-alive"
            : e.method === Method.Allocate
              ? "Allocate"
              : e.method === Method.Refresh
                ? "Refresh"
                : undefined;
        if (what !== undefined) this.#fail(`relay did not answer (${what})`, now);
        return;
      }
      case "channel-bound":
      case "channel-bind-failed":
      case "connection-attempt":
        this.#out.push(e);
        return;
      default:
        return;
    }
  }

  #maybeReady(): void {
    if (this.#state !== "allocating" || this.#pendingPermissions.size > 0) return;
    if (this.#relayed === undefined) return;
    this.#state = "ready";
    this.#lastRefusal = undefined;
    this.#out.push({ type: "ready", relayed: this.#relayed, lifetime: this.#lifetime });
  }

  // -------------------------------------------------------------------------------------------
  // Credential renewal: keep the allocation (and the relayed address) across credential ttls

  /** The next credential deadline and what to do then; undefined = none. */
  #credentialStep(): { at: number; step: "renew" | "reallocate" } | undefined {
    const c = this.#creds;
    if (c === undefined || !Number.isFinite(c.expiresAt) || this.#renewing) return undefined;
    const realloc = reallocateBy(c);
    if (this.#inPlaceRefused || this.#state !== "ready") return { at: realloc, step: "reallocate" };
    const renew = Math.max(c.renewAt, this.#renewRetryAt);
    return this.#renewRetryAt === 0 || renew < realloc
      ? { at: renew, step: "renew" }
      : { at: realloc, step: "reallocate" };
  }

  /**
   * Fresh credentials into the live allocation: setCredentials, then a Refresh signed with them.
   * turnpike-relay accepts them (same REST <user>); a relay that answers 441 makes the client go
   * back to the creating credentials, which #checkRenewal notices.
   */
  #renewWith(fresh: TurnCredentials, now: number): void {
    const client = this.#client;
    if (client === undefined) return;
    if (this.#state !== "ready" || fresh.username === this.#creds?.username) {
      // Nothing newer yet (or not allocated any more): look again a little later.
      this.#renewing = false;
      this.#renewRetryAt = now + RENEW_RETRY_MS;
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

  /** After a Refresh success: did the relay take the renewed credentials? */
  #checkRenewal(): void {
    const client = this.#client;
    if (client === undefined) return;
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
      this.#out.push({
        type: "renewal-refused",
        reallocateAt: a === undefined ? undefined : reallocateBy(a),
      });
      return;
    }
    const fresh = this.#pendingCreds;
    if (!this.#renewing || fresh === undefined) return;
    this.#creds = fresh;
    this.#allocCreds = fresh;
    this.#pendingCreds = undefined;
    this.#renewing = false;
    this.#renewRetryAt = 0;
    this.#renewals++;
    this.#out.push({ type: "renewed", renewals: this.#renewals, relayed: this.#relayed });
  }
}

/** What a 403 to a permission most likely means, and what would change it. */
function peerPolicyHint(peerIp: string): string {
  const loopback = peerIp.startsWith("127.") || peerIp === "::1";
  return ` (the relay's peer policy refuses ${peerIp}: ${loopback ? "run the relay with --allow-loopback-peers when everything is on one machine" : `the relay needs --allow-peer ${peerIp}`}, or leave it out of this tunnel's --allow-peer)`;
}

/** `c` with its wall-clock deadlines moved onto the machine's clock (`wallNow` is at `now`). */
function toMachineClock(c: TurnCredentials, now: number, wallNow: number): TurnCredentials {
  const shift = now - wallNow;
  return {
    username: c.username,
    password: c.password,
    expiresAt: c.expiresAt + shift,
    renewAt: c.renewAt + shift,
  };
}
