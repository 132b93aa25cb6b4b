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
// Its parts, each pure, live in lifecycle/: the states (states.ts) and outputs (outputs.ts) it
// speaks, what the relay's failures mean (failures.ts), when to give up and try again
// (reconnect.ts), and credential renewal in place (renewal.ts); where to allocate after an
// ALTERNATE-SERVER is redirects.ts, the backoff delays backoff.ts.

import {
  pinOfUsername,
  type RandomSource,
  type TransportAddress,
  TurnClient,
  type TurnClientEvent,
  type TurnData,
} from "@turnpike/relay-core/client";
import type { TurnCredentials } from "./credentials.js";
import { type Failure, failureOf, lost, pinTaken } from "./lifecycle/failures.js";
import type { TunnelOutput } from "./lifecycle/outputs.js";
import { Reconnect } from "./lifecycle/reconnect.js";
import { CredentialRenewal, toMachineClock } from "./lifecycle/renewal.js";
import type { TunnelState } from "./lifecycle/states.js";
import type { PinClaims } from "./pins.js";
import { Redirects, type RelayAddress } from "./redirects.js";
import type { ControlTransport } from "./uri.js";

// The machine's vocabulary, for its driver, the supervisor and the metrics.
export type { TunnelDown, TunnelOutput } from "./lifecycle/outputs.js";
export { TUNNEL_STATES, type TunnelState } from "./lifecycle/states.js";

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

export class TunnelLifecycle {
  #state: TunnelState = "connecting";
  /** Bumped on every (re)connect and teardown: reports naming an older attempt are ignored. */
  #attempt = 0;
  #client: TurnClient | undefined;
  #relayed: TransportAddress | undefined;
  #lifetime = 0;
  #lastError: string | undefined;
  #pinnedPort: number | undefined;
  #pinIgnoredSaid = false;
  #pendingPermissions = new Set<string>();
  /** What the outstanding fetch-credentials is for. */
  #fetching: "connect" | "renew" | undefined;
  /** Credentials, with their deadlines on this machine's clock (see toMachineClock). */
  readonly #renewal = new CredentialRenewal();
  /** Dead-relay detection, the backoff, and when to try again. */
  readonly #reconnect: Reconnect;
  /** Where to allocate: the relay address, or where a draining relay redirected to. */
  readonly #redirects: Redirects;
  /** The `now` of the latest input, for events found while outputs are drained. */
  #lastNow = 0;
  readonly #out: TunnelOutput[] = [];

  constructor(private readonly o: TunnelLifecycleOptions) {
    this.#reconnect = new Reconnect(o);
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
    return this.#reconnect.count;
  }

  /** Credential renewals that kept the allocation (and so the relayed address). */
  get credentialRenewals(): number {
    return this.#renewal.renewals;
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
    this.#reconnect.reset();
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
      this.#fail(lost(`credentials: ${message}`), now);
      return;
    }
    this.#renewal.fetchFailed(now);
    this.#lastError = `renewing credentials: ${message}`;
    this.#out.push({ type: "renewal-failed", error: message });
  }

  /** The control connection of `attempt` is open: allocate. */
  handleConnected(attempt: number, now: number): void {
    const client = this.#client;
    if (attempt !== this.#attempt || client === undefined) return;
    this.#state = "allocating";
    this.#reconnect.heard(now);
    client.allocate(now);
    this.#settle(now);
  }

  /** The control connection (or what it needs: the target's address) failed or closed. */
  handleTransportFailed(attempt: number, reason: string, now: number): void {
    if (attempt !== this.#attempt) return;
    this.#fail(lost(reason), now);
  }

  /**
   * One datagram, or one frame cut by StreamFramer, from the relay. Control messages update
   * the machine; peer data (ChannelData, Data indications) comes back as the client's reused
   * view, valid until the next call into the client.
   */
  handleInput(attempt: number, bytes: Uint8Array, now: number): TurnData | undefined {
    const client = this.#client;
    if (attempt !== this.#attempt || client === undefined) return undefined;
    this.#reconnect.heard(now);
    const data = client.handleInput(bytes, now);
    this.#settle(now);
    return data === undefined || data.peer === undefined ? undefined : data;
  }

  handleTimeout(now: number): void {
    if (this.#waiting()) {
      if (this.#reconnect.due(now)) this.#connect();
      return;
    }
    const client = this.#client;
    if (client === undefined) return;
    const silence = this.#reconnect.silence(now);
    if (silence !== undefined) {
      this.#fail(silence, now);
      return;
    }
    if (client.usesAllocationCredentials) {
      // The client went back to the allocation's credentials (441): say so, re-allocate later.
      const said = this.#renewal.check(client, this.#relayed);
      if (said !== undefined) this.#out.push(said);
    }
    const step = this.#renewal.step(this.#state === "ready");
    if (step !== undefined && step.at <= now) {
      if (step.step === "reallocate") {
        // The relay ties the allocation to the USERNAME that created it (RFC 8656 §7, 441), or
        // renewing failed: fresh credentials mean a fresh allocation (and relayed address).
        this.#out.push({ type: "reallocating", refusedInPlace: this.#renewal.inPlaceRefused });
        this.#teardown(true, now);
        this.#connect();
        return;
      }
      this.#renewal.begin();
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
    if (this.#waiting()) return this.#reconnect.retryAt;
    const client = this.#client;
    if (client === undefined) return undefined;
    let at = Math.min(client.pollTimeout() ?? Number.POSITIVE_INFINITY, this.#reconnect.silentAt);
    const step = this.#renewal.step(this.#state === "ready");
    if (step !== undefined) at = Math.min(at, step.at);
    return at;
  }

  // -------------------------------------------------------------------------------------------
  // Connection lifecycle

  /** Between attempts: lost (backoff) or refused, waiting for the retry. */
  #waiting(): boolean {
    return (this.#state === "backoff" || this.#state === "refused") && this.#client === undefined;
  }

  #connect(): void {
    this.#attempt++;
    this.#state = "connecting";
    this.#reconnect.cancel();
    this.#fetching = "connect";
    this.#out.push({ type: "fetch-credentials", attempt: this.#attempt });
  }

  #allocateWith(creds: TurnCredentials, now: number): void {
    this.#pinnedPort = pinOfUsername(creds.username)?.port;
    if (this.#pinnedPort !== undefined) {
      const holder = this.o.pins?.claim(`${this.o.relayIp}|${this.#pinnedPort}`, this);
      if (holder !== undefined) {
        this.#fail(pinTaken(this.#pinnedPort, this.o.relayIp, holder.serviceName), now);
        return;
      }
    }
    this.#renewal.allocating(creds);
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
    this.#reconnect.heard(now);
    this.#out.push({ type: "connect", attempt: this.#attempt, relay: this.#redirects.current });
  }

  /**
   * Lost the relay, or it refused the tunnel: tear down and try again after a backoff delay
   * (reconnect.ts), on the tunnel's own relay address.
   */
  #fail(f: Failure, now: number): void {
    if (this.#state === "stopped" || this.#state === "closed-window") return;
    const wasReady = this.#state === "ready";
    this.#lastError = f.reason;
    this.#teardown(false, now);
    this.#redirects.goHome();
    const down = this.#reconnect.down(f, wasReady, now);
    this.#state = f.refused ? "refused" : "backoff";
    this.#out.push(down);
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
    this.#reconnect.cancel();
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
    this.#renewal.dropped();
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
        this.#reconnect.connected(now);
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
      case "refreshed": {
        const client = this.#client;
        if (client === undefined) return;
        const said = this.#renewal.refreshed(client, this.#state === "ready", this.#relayed, now);
        if (said !== undefined) this.#out.push(said);
        return;
      }
      case "channel-bound":
      case "channel-bind-failed":
      case "connection-attempt":
        this.#out.push(e);
        return;
      default: {
        // Lost, refused, or sent elsewhere (failures.ts).
        const f = failureOf(e, this.#renewal.renewing);
        if (f === undefined) return;
        if (!("alternate" in f)) this.#fail(f, now);
        else if (!this.#redirect(f.alternate, now)) this.#fail(f.otherwise, now);
        return;
      }
    }
  }

  #maybeReady(): void {
    if (this.#state !== "allocating" || this.#pendingPermissions.size > 0) return;
    if (this.#relayed === undefined) return;
    this.#state = "ready";
    this.#reconnect.ready();
    this.#out.push({ type: "ready", relayed: this.#relayed, lifetime: this.#lifetime });
  }

  // -------------------------------------------------------------------------------------------
  // Credential renewal (renewal.ts): keep the allocation across credential ttls

  /** Fresh credentials for the live allocation: tried with a Refresh signed with them. */
  #renewWith(fresh: TurnCredentials, now: number): void {
    const client = this.#client;
    if (client === undefined) return;
    this.#renewal.renewWith(client, fresh, this.#state === "ready", now);
  }
}
