// One tunnel: one exposed service through one relay IP. It owns a TurnClient (relay-core's
// sans-IO state machine) and executes it: a control socket towards the relay (dgram for
// turn:?transport=udp, net for transport=tcp, tls for turns:), ONE timer armed from the
// client's pollTimeout(), keep-alive and dead-relay detection, reconnect with backoff.
//
// Call order after every input (relay bytes, timer, API call): client.handle*() -> drain
// pollOutput() (transmits onto the control socket, events acted on) -> re-arm the timer. Same
// loop as relay-server's driver and Firezone's: outputs, then timers.
//
// States (visible in /list):
//   connecting    opening the control socket
//   allocating    Allocate sent (credentials, 401/nonce dance inside the client)
//   ready         relayed address live, permissions installed for the allowed peers
//   backoff       the relay was lost or refused; waiting a full-jitter delay to try again
//   closed-window outside every access window: allocation released on purpose
//   stopped       removed (DELETE /expose or shutdown)
//
// Data paths:
//   UDP service: per peer (ip:port) a local dgram socket connected to the target. Peer -> target:
//   ChannelData / Data indication from the relay -> that peer's socket; the first datagram of a
//   peer also binds a channel (RFC 8656 §12) so replies travel as 4-byte-header ChannelData
//   (header and payload handed to the kernel as two buffers, never concatenated).
//   TCP service (RFC 6062 §4.3): on ConnectionAttempt, a NEW data connection to the relay,
//   ConnectionBind on it, then the target is dialled and both sockets are piped (pause/resume
//   backpressure, one write per read, no copy; plain TCP reads into reused buffers, see
//   runtime-kit reused-read-buffer.ts); a target that refuses gets the data connection ended
//   cleanly, which makes the relay close the peer's connection.

import { createSocket, type Socket as DgramSocket } from "node:dgram";
import { lookup } from "node:dns/promises";
import { isIP, connect as netConnect, type Socket } from "node:net";
import {
  type ConnectionOptions,
  createSecureContext,
  rootCertificates,
  type SecureContext,
  connect as tlsConnect,
} from "node:tls";
import {
  formatIp,
  formatTransportAddress,
  Method,
  type PeerConnectionId,
  parseIp,
  pinOfUsername,
  type RandomSource,
  StreamFramer,
  type TransportAddress,
  TurnClient,
  type TurnClientEvent,
  writeChannelDataHeader,
} from "@turnpike/relay-core";
import { forwardChunk, type Logger, ReusedReadBuffer } from "@turnpike/runtime-kit";
import { Backoff } from "./backoff.js";
import type { ServiceSpec } from "./config.js";
import { type CredentialSource, reallocateBy, type TurnCredentials } from "./credentials.js";
import { refusingLookup, targetRefusal } from "./targets.js";
import type { ControlTransport, TurnUri } from "./uri.js";

export type TunnelState =
  | "resolving"
  | "connecting"
  | "allocating"
  | "ready"
  | "backoff"
  | "closed-window"
  | "stopped";

export const TUNNEL_STATES: readonly TunnelState[] = [
  "resolving",
  "connecting",
  "allocating",
  "ready",
  "backoff",
  "closed-window",
  "stopped",
];

/** Process-wide counters (metrics read them at collection time). */
export interface TunnelCounters {
  reconnects: number;
  connectionsOpened: number;
  connectionsFailed: number;
  bytesIn: number;
  bytesOut: number;
}

export interface TunnelOptions {
  readonly serviceId: string;
  readonly service: ServiceSpec;
  readonly uri: TurnUri;
  readonly relayIp: string;
  readonly credentials: CredentialSource;
  readonly random: RandomSource;
  /** A uniform number in [0, 1) for backoff jitter. */
  readonly jitter: () => number;
  readonly logger: Logger;
  readonly counters: TunnelCounters;
  /** Seconds. */
  readonly keepalive: number;
  /** Idle UDP peer flows are closed after this many ms (default UDP_FLOW_IDLE_MS). */
  readonly udpFlowIdleMs?: number;
  readonly backoffBase: number;
  readonly backoffMax: number;
  readonly lifetime: number;
  readonly software: string;
  /** Monotonic ms. */
  readonly now?: () => number;
  /** Wall-clock ms (credential expiry). */
  readonly wallNow?: () => number;
  /** How turns: (TLS) relays are verified. Default: Node's bundled CAs, verification on. */
  readonly tls?: TlsTrust;
  /**
   * Pinned credentials: claim `relayIp|port` for this tunnel. Returns the name of another live
   * service of this process already serving that pin (then this tunnel must not allocate: two
   * allocations of one user on one pinned port take it over from each other), else undefined.
   */
  readonly claimPin?: (key: string, tunnel: Tunnel) => string | undefined;
  /** --allow-metadata-targets: do not refuse names that resolve to metadata addresses. */
  readonly allowMetadataTargets?: boolean;
}

/** Trust for TLS control and data connections (turns:). */
export interface TlsTrust {
  /** PEM certificates to trust; undefined = Node's bundled roots only. */
  readonly ca?: readonly string[];
  /** false only for tests (--insecure-skip-verify). */
  readonly rejectUnauthorized: boolean;
  /** The name the certificate must carry, and the SNI (--tls-servername); default the URI's host name. */
  readonly servername?: string;
}

/** After a failed credential fetch, try again this much later (until re-allocation is due). */
const RENEW_RETRY_MS = 5_000;
/** UDP peer flows idle this long are closed (their local socket freed). */
const UDP_FLOW_IDLE_MS = 120_000;
/** At most this many UDP peer flows per tunnel (each holds a local socket). */
const MAX_UDP_FLOWS = 1024;
/** RFC 6062 §5.4: the server drops unbound connections after 30 s; we give up a bit earlier. */
const CONNECTION_BIND_TIMEOUT_MS = 25_000;
/** A target that drops SYNs would hold the peer for the kernel's ~2 min; give up sooner. */
const TARGET_CONNECT_TIMEOUT_MS = 10_000;

interface UdpFlow {
  readonly key: string;
  readonly peer: TransportAddress;
  readonly socket: DgramSocket;
  /** undefined: no channel number was free, the flow answers with Send indications. */
  readonly channel: number | undefined;
  bound: boolean;
  lastUse: number;
}

const PADDING = new Uint8Array(3);

export class Tunnel {
  state: TunnelState = "connecting";
  relayedAddress: TransportAddress | undefined;
  lastError: string | undefined;
  openConnections = 0;
  bytesIn = 0;
  bytesOut = 0;
  reconnects = 0;
  /** The relay port the credentials pin, if they do (auth/pinned-username.ts in relay-core). */
  pinnedPort: number | undefined;

  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly now: () => number;
  private readonly wallNow: () => number;
  private readonly control: ControlTransport;
  private client: TurnClient | undefined;
  private udp: DgramSocket | undefined;
  private stream: Socket | undefined;
  private framer: StreamFramer | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private lastRx = 0;
  /** The credentials the client signs with now. */
  private creds: TurnCredentials | undefined;
  /** The credentials the relay accepted for the current allocation (at Allocate or a renewal). */
  private allocCreds: TurnCredentials | undefined;
  /** Renewed credentials swapped into the client, waiting for the Refresh that tries them. */
  private pendingCreds: TurnCredentials | undefined;
  private renewing = false;
  private renewRetryAt = 0;
  /** This relay answered 441 to renewed credentials (coturn): re-allocate instead. */
  private inPlaceRefused = false;
  /** Credential renewals that kept the allocation (and so the relayed address). */
  credentialRenewals = 0;
  /** UDP peer flows that got no channel (all 4096 numbers bound or cooling down). */
  channelsExhausted = 0;
  /** Datagrams and connection attempts from peers outside --allow-peer (a permissive relay). */
  peersRefused = 0;
  /** The allowed peer IPs, canonical (formatIp). */
  private readonly allowed: ReadonlySet<string>;
  /** Bumped on every (re)connect: callbacks of an older generation are ignored. */
  private generation = 0;
  private readonly flows = new Map<string, UdpFlow>();
  private readonly pipes = new Set<Socket>();
  private targetAddress: { ip: string; family: 4 | 6 } | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private pendingPermissions = new Set<string>();
  private allocatedLifetime = 0;
  /** A relay gave a dynamic port to pinned credentials (coturn): logged once per tunnel. */
  private pinIgnoredLogged = false;

  constructor(private readonly o: TunnelOptions) {
    this.now = o.now ?? (() => performance.now());
    this.wallNow = o.wallNow ?? Date.now;
    this.log = o.logger.child({ service: o.service.name, relay: o.relayIp });
    this.allowed = new Set(
      o.service.allowPeers.ips.map((ip) => {
        const parsed = parseIp(ip);
        return parsed === undefined ? ip : formatIp(parsed);
      }),
    );
    this.backoff = new Backoff({
      baseMs: o.backoffBase * 1000,
      capMs: o.backoffMax * 1000,
      random: o.jitter,
    });
    // RFC 6062 needs a stream control connection; a turn: URI serves TCP on the same port.
    this.control =
      o.service.protocol === "tcp" && o.uri.transport === "udp" ? "tcp" : o.uri.transport;
  }

  get serviceName(): string {
    return this.o.service.name;
  }

  get relayLabel(): string {
    const h = this.o.relayIp.includes(":") ? `[${this.o.relayIp}]` : this.o.relayIp;
    return `${this.o.uri.secure ? "turns" : "turn"}:${h}:${this.o.uri.port}?transport=${this.control === "tls" ? "tcp" : this.control}`;
  }

  start(): void {
    if (this.state === "stopped") return;
    void this.connect();
  }

  /** Release the allocation and close everything; the tunnel is done. */
  stop(): void {
    this.teardown(true);
    this.setState("stopped");
  }

  /** Outside the access windows: release, and stay idle until `reopen()`. */
  closeWindow(): void {
    if (this.state === "closed-window" || this.state === "stopped") return;
    this.teardown(true);
    this.setState("closed-window");
    this.log.info("access window closed: allocation released");
  }

  /** Created while the window is closed: nothing to release, just show the state. */
  closeWindowIdle(): void {
    this.setState("closed-window");
  }

  reopen(): void {
    if (this.state !== "closed-window") return;
    this.backoff.reset();
    this.log.info("access window open: allocating");
    void this.connect();
  }

  // -------------------------------------------------------------------------------------------
  // Connection lifecycle

  private async connect(): Promise<void> {
    const gen = ++this.generation;
    this.setState("connecting");
    let creds: TurnCredentials;
    try {
      creds = await this.o.credentials.get();
    } catch (err) {
      if (gen === this.generation) this.fail(`credentials: ${(err as Error).message}`);
      return;
    }
    if (gen !== this.generation) return;
    this.pinnedPort = pinOfUsername(creds.username)?.port;
    if (this.pinnedPort !== undefined) {
      const other = this.o.claimPin?.(`${this.o.relayIp}|${this.pinnedPort}`, this);
      if (other !== undefined) {
        this.fail(
          `pinned port ${this.pinnedPort} on ${this.o.relayIp} is already served by service "${other}": one service per pinned credential`,
        );
        return;
      }
    }
    this.creds = creds;
    this.allocCreds = creds;
    this.renewRetryAt = 0;
    try {
      if (this.o.service.protocol === "udp") await this.resolveTarget();
    } catch (err) {
      if (gen === this.generation)
        this.fail(`target ${this.o.service.target.host}: ${(err as Error).message}`);
      return;
    }
    if (gen !== this.generation) return;
    const family = isIP(this.o.relayIp) === 6 ? 6 : 4;
    this.client = new TurnClient({
      username: creds.username,
      password: creds.password,
      random: this.o.random,
      transport: this.control,
      requestedTransport: this.o.service.protocol,
      family,
      lifetime: this.o.lifetime,
      software: this.o.software,
      keepaliveInterval: this.o.keepalive,
    });
    this.lastRx = this.now();
    if (this.control === "udp") {
      const sock = createSocket({ type: family === 6 ? "udp6" : "udp4" });
      this.udp = sock;
      sock.on("message", (msg) => {
        if (gen === this.generation) this.onControlDatagram(msg);
      });
      sock.on("error", (err) => {
        if (gen === this.generation) this.fail(`control socket: ${err.message}`);
      });
      sock.connect(this.o.uri.port, this.o.relayIp, () => {
        if (gen !== this.generation) return;
        this.beginAllocate();
      });
    } else {
      const sock =
        this.control === "tls"
          ? tlsConnect(this.tlsOptions())
          : netConnect({ host: this.o.relayIp, port: this.o.uri.port });
      sock.setNoDelay(true);
      this.stream = sock;
      this.framer = new StreamFramer();
      sock.once(this.control === "tls" ? "secureConnect" : "connect", () => {
        if (gen === this.generation) this.beginAllocate();
      });
      sock.on("data", (chunk: Buffer) => {
        if (gen === this.generation) this.onControlChunk(chunk);
      });
      sock.on("error", (err) => {
        if (gen === this.generation) this.fail(`control connection: ${err.message}`);
      });
      sock.on("close", () => {
        if (gen === this.generation) this.fail("control connection closed by the relay");
      });
    }
    this.armTimer();
  }

  /**
   * TLS towards the relay: the certificate must name the URI's host (SNI and identity check use
   * the name, the socket the resolved address; an IP literal needs an IP subjectAltName), or
   * the --tls-servername when one is set (a turns:IP URI whose certificate names a DNS name).
   */
  private tlsOptions(): ConnectionOptions {
    const tls = this.o.tls;
    const named = isIP(this.o.uri.host) === 0;
    return {
      host: this.o.relayIp,
      port: this.o.uri.port,
      // Node checks the certificate against `servername` when set (tls.checkServerIdentity).
      servername: tls?.servername ?? (named ? this.o.uri.host : undefined),
      // Without SNI Node checks the identity against `host`: the URI's IP, same as relayIp.
      ...(tls?.ca !== undefined ? { secureContext: trustContext(tls.ca) } : {}),
      rejectUnauthorized: tls?.rejectUnauthorized ?? true,
    };
  }

  private beginAllocate(): void {
    this.setState("allocating");
    this.lastRx = this.now();
    this.client?.allocate(this.now());
    this.flush();
  }

  private async resolveTarget(): Promise<void> {
    const host = this.o.service.target.host;
    const fam = isIP(host);
    const a = fam !== 0 ? { address: host, family: fam } : await lookup(host);
    // A name may resolve to a metadata service even though the literal was never configured.
    const refusal = targetRefusal(a.address, this.o.allowMetadataTargets === true);
    if (refusal !== undefined) throw new Error(fam !== 0 ? refusal : `${host}: ${refusal}`);
    this.targetAddress = { ip: a.address, family: a.family === 6 ? 6 : 4 };
  }

  /** Lost the relay (or it refused): tear down and try again after a backoff delay. */
  private fail(reason: string, immediate = false): void {
    if (this.state === "stopped" || this.state === "closed-window") return;
    const wasReady = this.state === "ready";
    this.lastError = reason;
    this.teardown(false);
    const delay = immediate ? 0 : this.backoff.next(this.now());
    this.reconnects++;
    this.o.counters.reconnects++;
    this.setState("backoff");
    this.log[wasReady ? "warn" : "info"]("tunnel down, reconnecting", {
      reason,
      delayMs: delay,
      attempt: this.backoff.attempts,
    });
    const gen = this.generation;
    this.timerAt = this.now() + delay;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (gen === this.generation && this.state === "backoff") void this.connect();
    }, delay);
  }

  private teardown(release: boolean): void {
    this.generation++;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    const client = this.client;
    // Any state that holds an allocation ("allocating" with permissions pending included).
    if (release && client !== undefined && this.relayedAddress !== undefined) {
      // Best effort: Refresh lifetime 0 (RFC 8656 §7.2) so the relayed address goes at once.
      try {
        client.release(this.now());
        this.flush(true);
      } catch {
        // the socket may already be gone
      }
    }
    this.client = undefined;
    const udp = this.udp;
    this.udp = undefined;
    if (udp !== undefined) setImmediate(() => closeQuietly(udp));
    const stream = this.stream;
    this.stream = undefined;
    this.framer = undefined;
    if (stream !== undefined) {
      if (release) stream.end();
      else stream.destroy();
    }
    for (const f of this.flows.values()) closeQuietly(f.socket);
    this.flows.clear();
    for (const p of this.pipes) p.destroy();
    this.pipes.clear();
    this.openConnections = 0;
    this.relayedAddress = undefined;
    this.renewing = false;
    this.pendingCreds = undefined;
  }

  private setState(s: TunnelState): void {
    this.state = s;
  }

  // -------------------------------------------------------------------------------------------
  // The client loop

  /** Drain the client's outputs; `final` (the tunnel is closing): transmits only, no timer. */
  private flush(final = false): void {
    const client = this.client;
    if (client === undefined) return;
    // An event can queue more outputs (allocated -> CreatePermission): they are drained by the
    // same loop, before the timer is armed.
    for (let out = client.pollOutput(); out !== undefined; out = client.pollOutput()) {
      if (out.type === "transmit") this.sendControl(out.data);
      else if (!final) {
        this.onEvent(out);
        if (this.client !== client) return; // the event tore the tunnel down
      }
    }
    if (!final) this.armTimer();
  }

  private sendControl(bytes: Uint8Array, payload?: Uint8Array): void {
    if (this.udp !== undefined) {
      if (payload === undefined) this.udp.send(bytes);
      else this.udp.send([bytes, payload]);
      return;
    }
    const s = this.stream;
    if (s === undefined || s.destroyed) return;
    s.write(bytes);
    if (payload !== undefined) {
      s.write(payload);
      // RFC 8656 §12.5: over a stream ChannelData is padded to a multiple of 4.
      const pad = (4 - (payload.length & 3)) & 3;
      if (pad > 0) s.write(PADDING.subarray(0, pad));
    }
  }

  private armTimer(): void {
    const client = this.client;
    if (client === undefined) return;
    const now = this.now();
    let at = client.pollTimeout() ?? Number.POSITIVE_INFINITY;
    // Dead-relay detection: the client sends a Binding keep-alive every --keepalive seconds, so
    // silence for twice that means the relay (or the path) is gone.
    at = Math.min(at, this.lastRx + this.o.keepalive * 2000);
    const step = this.credentialStep();
    if (step !== undefined) at = Math.min(at, now + (step.at - this.wallNow()));
    if (this.timer !== undefined && at === this.timerAt) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = at;
    const gen = this.generation;
    // setTimeout holds at most ~24.8 days; a later deadline is simply re-armed on the way.
    this.timer = setTimeout(() => this.onTimer(gen), Math.max(0, Math.min(at - now, 0x7fffffff)));
  }

  private onTimer(gen: number): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const client = this.client;
    if (gen !== this.generation || client === undefined) return;
    const now = this.now();
    if (now - this.lastRx >= this.o.keepalive * 2000) {
      this.fail(`no answer from the relay for ${this.o.keepalive * 2} s`);
      return;
    }
    if (client.usesAllocationCredentials) this.checkRenewal();
    const step = this.credentialStep();
    if (step !== undefined && step.at <= this.wallNow()) {
      if (step.step === "reallocate") {
        // The relay ties the allocation to the USERNAME that created it (RFC 8656 §7, 441), or
        // renewing failed: fresh credentials mean a fresh allocation (and relayed address).
        this.log.info("credentials about to expire: re-allocating with fresh ones", {
          refusedInPlace: this.inPlaceRefused,
        });
        this.teardown(true);
        this.setState("backoff");
        void this.connect();
        return;
      }
      void this.renewCredentials();
    }
    client.handleTimeout(now);
    this.flush();
  }

  // -------------------------------------------------------------------------------------------
  // Credential renewal: keep the allocation (and the relayed address) across credential ttls

  /** The next credential deadline (wall-clock ms) and what to do then; undefined = none. */
  private credentialStep(): { at: number; step: "renew" | "reallocate" } | undefined {
    const c = this.creds;
    if (c === undefined || !Number.isFinite(c.expiresAt) || this.renewing) return undefined;
    const realloc = reallocateBy(c);
    if (this.inPlaceRefused || this.state !== "ready") return { at: realloc, step: "reallocate" };
    const renew = Math.max(c.renewAt, this.renewRetryAt);
    return this.renewRetryAt === 0 || renew < realloc
      ? { at: renew, step: "renew" }
      : { at: realloc, step: "reallocate" };
  }

  /**
   * Fresh credentials into the live allocation: setCredentials, then a Refresh signed with them.
   * turnpike-relay accepts them (same REST <user>); a relay that answers 441 makes the client go
   * back to the creating credentials, which checkRenewal() notices.
   */
  private async renewCredentials(): Promise<void> {
    const gen = this.generation;
    this.renewing = true;
    let fresh: TurnCredentials;
    try {
      fresh = await this.o.credentials.get();
    } catch (err) {
      if (gen !== this.generation) return;
      this.renewing = false;
      this.renewRetryAt = this.wallNow() + RENEW_RETRY_MS;
      this.lastError = `renewing credentials: ${(err as Error).message}`;
      this.log.warn("could not renew credentials, trying again", { err: (err as Error).message });
      this.armTimer();
      return;
    }
    const client = this.client;
    if (gen !== this.generation || client === undefined) return;
    if (this.state !== "ready" || fresh.username === this.creds?.username) {
      // Nothing newer yet (or not allocated any more): look again a little later.
      this.renewing = false;
      this.renewRetryAt = this.wallNow() + RENEW_RETRY_MS;
      this.armTimer();
      return;
    }
    const requests = client.stats.requests;
    client.setCredentials(fresh.username, fresh.password);
    // RFC 8656 §7.2: the Refresh that carries the new USERNAME; lifetime as before.
    client.refresh(this.now());
    if (client.stats.requests === requests) {
      // A Refresh with the current credentials is in flight: its answer would say nothing
      // about the new ones. Put the current ones back and try again in a moment.
      const current = this.creds!;
      client.setCredentials(current.username, current.password);
      this.renewing = false;
      this.renewRetryAt = this.wallNow() + 1000;
      this.armTimer();
      return;
    }
    this.pendingCreds = fresh;
    this.flush();
  }

  /** After a Refresh success: did the relay take the renewed credentials? */
  private checkRenewal(): void {
    const client = this.client;
    if (client === undefined) return;
    if (client.usesAllocationCredentials) {
      // 441 to the renewed USERNAME (coturn): sign everything with the accepted credentials
      // again (ConnectionBind included) and re-allocate before they expire.
      const a = this.allocCreds;
      this.inPlaceRefused = true;
      this.renewing = false;
      this.pendingCreds = undefined;
      if (a !== undefined) {
        client.setCredentials(a.username, a.password);
        this.creds = a;
      }
      this.log.info(
        "the relay refused renewed credentials for this allocation (441): re-allocating before the old ones expire",
        { at: a === undefined ? undefined : new Date(reallocateBy(a)).toISOString() },
      );
      return;
    }
    const fresh = this.pendingCreds;
    if (!this.renewing || fresh === undefined) return;
    this.creds = fresh;
    this.allocCreds = fresh;
    this.pendingCreds = undefined;
    this.renewing = false;
    this.renewRetryAt = 0;
    this.credentialRenewals++;
    this.log.info("credentials renewed in place", {
      relayed: this.relayedAddress ? formatTransportAddress(this.relayedAddress) : undefined,
      renewals: this.credentialRenewals,
    });
  }

  private onEvent(e: TurnClientEvent): void {
    switch (e.type) {
      case "allocated":
        this.relayedAddress = e.relayed;
        if (
          this.pinnedPort !== undefined &&
          e.relayed.port !== this.pinnedPort &&
          !this.pinIgnoredLogged
        ) {
          // coturn, or any relay that reads pinned credentials as plain REST ones: the tunnel
          // still serves, but the platform must look the address up (the tunnel's /list).
          this.pinIgnoredLogged = true;
          this.log.warn("the relay did not honour the pinned port: serving on a dynamic port", {
            pinnedPort: this.pinnedPort,
            relayed: formatTransportAddress(e.relayed),
          });
        }
        this.lastError = undefined;
        this.backoff.connected(this.now());
        this.allocatedLifetime = e.lifetime;
        // "ready" means reachable: only once the relay confirmed the permissions (RFC 8656 §9),
        // since it drops peer traffic until then.
        this.pendingPermissions = new Set(this.o.service.allowPeers.ips);
        for (const ip of this.o.service.allowPeers.ips)
          this.client?.createPermission(ip, this.now());
        this.maybeReady();
        return;
      case "permission-created":
        this.pendingPermissions.delete(e.peerIp);
        this.maybeReady();
        return;
      case "allocate-failed":
        this.fail(`allocate failed: ${e.code} ${e.reason}`);
        return;
      case "refreshed":
        this.checkRenewal();
        return;
      case "refresh-failed":
        this.fail(`refresh failed: ${e.code} ${e.reason}`, this.renewing);
        return;
      case "released":
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
        if (what !== undefined) this.fail(`relay did not answer (${what})`);
        return;
      }
      case "permission-failed":
        this.pendingPermissions.delete(e.peerIp);
        this.maybeReady();
        this.lastError = `permission for ${e.peerIp} refused: ${e.code} ${e.reason}`;
        this.log.warn("permission refused", { peer: e.peerIp, code: e.code, reason: e.reason });
        return;
      case "channel-bound": {
        const flow = this.flows.get(formatTransportAddress(e.peer));
        if (flow !== undefined && flow.channel === e.channel) flow.bound = true;
        return;
      }
      case "channel-bind-failed":
        this.log.debug("channel bind failed", {
          peer: formatTransportAddress(e.peer),
          code: e.code,
        });
        return;
      case "connection-attempt":
        this.onConnectionAttempt(e.peer, e.connectionId);
        return;
      default:
        return;
    }
  }

  private maybeReady(): void {
    if (this.state !== "allocating" || this.pendingPermissions.size > 0) return;
    if (this.relayedAddress === undefined) return;
    this.setState("ready");
    this.log.info("tunnel ready", {
      relayed: formatTransportAddress(this.relayedAddress),
      lifetime: this.allocatedLifetime,
      target: `${this.o.service.protocol}://${this.o.service.target.host}:${this.o.service.target.port}`,
    });
    const idle = this.o.udpFlowIdleMs ?? UDP_FLOW_IDLE_MS;
    this.sweepTimer = setInterval(() => this.sweepFlows(), Math.min(30_000, idle / 2));
    this.sweepTimer.unref();
  }

  // -------------------------------------------------------------------------------------------
  // Input from the relay

  private onControlDatagram(msg: Buffer): void {
    this.lastRx = this.now();
    this.onControlMessage(msg);
    this.flush();
  }

  private onControlChunk(chunk: Buffer): void {
    const framer = this.framer;
    if (framer === undefined) return;
    this.lastRx = this.now();
    framer.push(chunk);
    for (let f = framer.next(); f !== undefined; f = framer.next()) {
      this.onControlMessage(f);
      if (this.framer !== framer) return;
    }
    if (framer.error !== undefined) {
      this.fail("the relay sent bytes that are neither STUN nor ChannelData");
      return;
    }
    this.flush();
  }

  private onControlMessage(bytes: Uint8Array): void {
    const client = this.client;
    if (client === undefined) return;
    // Control messages update the client; ChannelData and Data indications come back as a view.
    const data = client.handleInput(bytes, this.now());
    if (data === undefined || data.peer === undefined) return;
    this.onPeerDatagram(data.peer, data.bytes.subarray(data.start, data.end));
  }

  /**
   * Defence in depth: the relay enforces the permissions (RFC 8656 §9), but a permissive or
   * misconfigured one must still not get a stranger to the target. Counted, logged at debug.
   */
  private peerAllowed(peer: TransportAddress): boolean {
    const ip = parseIp(peer.address);
    if (ip !== undefined && this.allowed.has(formatIp(ip))) return true;
    this.peersRefused++;
    this.log.debug("traffic from a peer outside --allow-peer dropped", {
      peer: formatTransportAddress(peer),
      refused: this.peersRefused,
    });
    return false;
  }

  // -------------------------------------------------------------------------------------------
  // UDP services

  private onPeerDatagram(peer: TransportAddress, payload: Uint8Array): void {
    if (this.o.service.protocol !== "udp" || this.targetAddress === undefined) return;
    if (!this.peerAllowed(peer)) return;
    const key = formatTransportAddress(peer);
    let flow = this.flows.get(key);
    if (flow === undefined) {
      if (this.flows.size >= MAX_UDP_FLOWS) return;
      flow = this.openFlow(key, peer);
    }
    flow.lastUse = this.now();
    this.bytesIn += payload.length;
    this.o.counters.bytesIn += payload.length;
    const target = this.targetAddress;
    flow.socket.send(payload, this.o.service.target.port, target.ip);
  }

  private openFlow(key: string, peer: TransportAddress): UdpFlow {
    const target = this.targetAddress!;
    const socket = createSocket({ type: target.family === 6 ? "udp6" : "udp4" });
    const client = this.client!;
    // RFC 8656 §12: a channel for this peer, so replies cost 4 bytes of header, not 36. There
    // are 4096 numbers and an unbound one stays reserved for its lifetime plus a 5-minute
    // cool-down, so a busy tunnel can run out: then this flow answers with Send indications.
    let channel: number | undefined;
    try {
      channel = client.bindChannel(peer, this.now());
    } catch (err) {
      this.channelsExhausted++;
      if (this.channelsExhausted === 1 || this.channelsExhausted % 1000 === 0) {
        this.log.warn("no channel number free: this peer is served with Send indications", {
          peer: key,
          flowsWithoutChannel: this.channelsExhausted,
          err: (err as Error).message,
        });
      }
    }
    const flow: UdpFlow = { key, peer, socket, channel, bound: false, lastUse: this.now() };
    this.flows.set(key, flow);
    this.openConnections = this.flows.size;
    this.o.counters.connectionsOpened++;
    socket.on("error", (err) => {
      this.log.debug("target socket error", { peer: key, err: err.message });
    });
    // Not connect()ed (sends would be refused until the connect completes); instead every reply
    // must come from the target's address, anything else on this port is dropped.
    const port = this.o.service.target.port;
    socket.on("message", (reply, from) => {
      if (from.port === port && from.address === target.ip) this.onTargetDatagram(flow, reply);
    });
    this.log.debug("udp peer flow opened", { peer: key, channel });
    return flow;
  }

  private onTargetDatagram(flow: UdpFlow, reply: Buffer): void {
    const client = this.client;
    if (client === undefined || this.flows.get(flow.key) !== flow) return;
    flow.lastUse = this.now();
    this.bytesOut += reply.length;
    this.o.counters.bytesOut += reply.length;
    if (flow.bound && flow.channel !== undefined) {
      // A fresh 4-byte header per datagram (from Node's pool): the kernel may get the buffers
      // later than this call returns, so a shared header could be overwritten in between.
      const header = Buffer.allocUnsafe(4);
      writeChannelDataHeader(header, 0, flow.channel, reply.length);
      this.sendControl(header, reply);
      return;
    }
    // Until the ChannelBind succeeded: a Send indication (RFC 8656 §11.1).
    this.sendControl(client.sendIndication(flow.peer, reply));
  }

  private sweepFlows(): void {
    const cutoff = this.now() - (this.o.udpFlowIdleMs ?? UDP_FLOW_IDLE_MS);
    for (const f of this.flows.values()) {
      if (f.lastUse >= cutoff) continue;
      this.flows.delete(f.key);
      // Stop refreshing its channel: the client frees the number after the cool-down (RFC 8656
      // §12), so numbers come back instead of running out after 4096 peers.
      if (f.channel !== undefined) this.client?.unbindChannel(f.channel);
      closeQuietly(f.socket);
    }
    if (this.o.service.protocol === "udp") this.openConnections = this.flows.size;
  }

  // -------------------------------------------------------------------------------------------
  // TCP services (RFC 6062 §4.3)

  private onConnectionAttempt(peer: TransportAddress, connectionId: PeerConnectionId): void {
    const client = this.client;
    if (client === undefined || this.o.service.protocol !== "tcp") return;
    if (!this.peerAllowed(peer)) return;
    const gen = this.generation;
    const peerText = formatTransportAddress(peer);
    // Plain TCP reads into one reused buffer (runtime-kit reused-read-buffer.ts: no 64 KiB
    // allocation per read); Node's TLS sockets cannot, they keep 'data' events.
    const reads = this.control === "tls" ? undefined : new ReusedReadBuffer();
    // allowHalfOpen: the peer's FIN (its request is complete) must not close our side before
    // the target's reply has gone back (TCP half-close, RFC 9293 §3.6).
    const data =
      reads === undefined
        ? // Node's tls.connect honours allowHalfOpen; its ConnectionOptions type omits it.
          tlsConnect({ ...this.tlsOptions(), allowHalfOpen: true } as ConnectionOptions)
        : netConnect({
            host: this.o.relayIp,
            port: this.o.uri.port,
            allowHalfOpen: true,
            onread: reads.onread,
          });
    data.setNoDelay(true);
    this.pipes.add(data);
    data.once("close", () => this.pipes.delete(data));
    data.on("error", (err) =>
      this.log.debug("data connection error", { peer: peerText, err: err.message }),
    );
    const bindTimer = setTimeout(() => data.destroy(), CONNECTION_BIND_TIMEOUT_MS);
    data.once("close", () => clearTimeout(bindTimer));
    data.once(this.control === "tls" ? "secureConnect" : "connect", () => {
      if (gen !== this.generation || this.client === undefined) return data.destroy();
      data.write(this.client.connectionBindRequest(connectionId));
    });
    // Read exactly one frame (the ConnectionBind answer); RFC 6062 §5.4: what follows is the
    // peer's data. The framer gets a copy (a reused read buffer is overwritten by the next
    // read; this is one small read per connection). Returns whether to keep reading.
    let framer = new StreamFramer();
    const onBindBytes = (chunk: Buffer): boolean => {
      framer.push(reads === undefined ? chunk : Buffer.from(chunk));
      const answer = framer.next();
      if (answer === undefined) {
        if (framer.error === undefined) return true;
        data.destroy(); // neither STUN nor ChannelData
        return false;
      }
      const rest = framer.takeRemaining();
      const c = this.client;
      if (gen !== this.generation || c === undefined) {
        data.destroy();
        return false;
      }
      const result = c.handleConnectionBindResponse(answer);
      if (!result.ok) {
        if (result.retry !== undefined) {
          // 401/438: a fresh framer for the retried bind's answer.
          framer = new StreamFramer();
          data.write(result.retry);
          return true;
        }
        this.log.warn("connection bind refused", {
          peer: peerText,
          code: result.code,
          reason: result.reason,
        });
        this.o.counters.connectionsFailed++;
        data.destroy();
        return false;
      }
      clearTimeout(bindTimer);
      // Paused until the target answers; the peer's first bytes wait in `rest`.
      this.dialTarget(data, rest, peerText, reads);
      return false;
    };
    if (reads !== undefined) {
      reads.sink = onBindBytes;
      return;
    }
    const onData = (chunk: Buffer) => {
      if (onBindBytes(chunk)) return;
      data.off("data", onData);
      data.pause();
    };
    data.on("data", onData);
  }

  /**
   * The bound data connection meets the target: bytes both ways with backpressure (a full
   * destination pauses the source until 'drain'), each side's FIN forwarded as end() on the
   * other (half-open both ways: a socket closes once both directions ended, or on an error,
   * which destroys both). One write per read, no copy.
   */
  private dialTarget(
    data: Socket,
    early: Uint8Array,
    peerText: string,
    dataReads: ReusedReadBuffer | undefined,
  ): void {
    const { host, port } = this.o.service.target;
    const targetReads = new ReusedReadBuffer();
    // Literal targets were checked when the service was configured; names are checked as they
    // resolve (targets.ts).
    const target = netConnect({
      host,
      port,
      allowHalfOpen: true,
      onread: targetReads.onread,
      ...(this.o.allowMetadataTargets === true ? {} : { lookup: REFUSING_LOOKUP }),
    });
    target.setNoDelay(true);
    this.pipes.add(target);
    this.o.counters.connectionsOpened++;
    // One open connection = one bound data connection, from ConnectionBind success to close.
    const gen = this.generation;
    this.openConnections++;
    data.once("close", (hadError) => {
      if (gen === this.generation) this.openConnections--;
      this.log.debug("tcp connection closed", {
        peer: peerText,
        hadError,
        fromPeer: data.bytesRead,
        toPeer: data.bytesWritten,
      });
    });
    let connected = false;
    // The error handler below then ends the peer's side cleanly, as for a refusal.
    const connectTimer = setTimeout(
      () => target.destroy(new Error(`connect timed out after ${TARGET_CONNECT_TIMEOUT_MS} ms`)),
      TARGET_CONNECT_TIMEOUT_MS,
    );
    target.once("close", () => {
      clearTimeout(connectTimer);
      this.pipes.delete(target);
    });
    target.on("error", (err) => {
      if (!connected) {
        // The target refused or is unreachable: end the peer's side cleanly (FIN, not RST), so
        // the platform sees a closed connection instead of a hang.
        this.o.counters.connectionsFailed++;
        this.log.info("target refused the connection", { peer: peerText, err: err.message });
        if (dataReads !== undefined) dataReads.sink = () => true; // discard until the FIN
        data.end();
        data.resume(); // read the relay's FIN so the socket closes
        // Half-open: a relay that never sends its FIN must not keep the socket forever.
        setTimeout(() => data.destroy(), 5000).unref();
        return;
      }
      this.log.debug("target connection error", { peer: peerText, err: err.message });
      data.destroy();
    });
    data.on("error", () => target.destroy());
    data.once("close", () => target.destroy());
    target.once("close", () => {
      if (!data.destroyed && connected) data.end();
    });
    // target -> peer: the target speaks only once connected, by which time data is bound.
    targetReads.sink = (chunk) => {
      this.bytesOut += chunk.length;
      this.o.counters.bytesOut += chunk.length;
      return forwardChunk(chunk, target, data, targetReads);
    };
    target.once("connect", () => {
      clearTimeout(connectTimer);
      connected = true;
      this.log.debug("tcp connection piped", { peer: peerText });
      if (early.length > 0) {
        this.bytesIn += early.length;
        this.o.counters.bytesIn += early.length;
        target.write(early);
      }
      // peer -> target
      const toTarget = (chunk: Buffer) => {
        this.bytesIn += chunk.length;
        this.o.counters.bytesIn += chunk.length;
        return forwardChunk(chunk, data, target, dataReads);
      };
      if (dataReads !== undefined) {
        dataReads.sink = toTarget;
      } else {
        data.on("data", (chunk: Buffer) => {
          if (!toTarget(chunk)) data.pause();
        });
      }
      data.on("end", () => target.end());
      target.on("end", () => data.end());
      data.resume();
    });
  }
}

const REFUSING_LOOKUP = refusingLookup();

const trustContexts = new WeakMap<readonly string[], SecureContext>();

/** Node's bundled roots plus `ca` (a `ca` option alone would replace them), built once. */
function trustContext(ca: readonly string[]): SecureContext {
  let ctx = trustContexts.get(ca);
  if (ctx === undefined) {
    ctx = createSecureContext({ ca: [...rootCertificates, ...ca] });
    trustContexts.set(ca, ctx);
  }
  return ctx;
}

function closeQuietly(s: DgramSocket): void {
  try {
    s.close();
  } catch {
    // already closed
  }
}
