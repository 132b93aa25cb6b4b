/**
 * The permissions and channel bindings a client wants (RFC 8656 §9, §10, §12), whether the
 * server granted them, and when each is refreshed. A channel keeps its peer's permission
 * alive (ChannelBind installs it too, §12.3), so a permission counts the channels that need
 * it and goes when neither they nor the application want it. A channel number stays taken
 * until its binding's end plus the 5-minute cool-down (§12), so a late packet never reaches
 * the wrong peer.
 */
import type { TransportAddress } from "../codec/address.js";
import { MAX_CHANNEL, MIN_CHANNEL } from "../codec/constants.js";

/** RFC 8656 §12: a channel binding lasts 10 minutes unless refreshed... */
export const CHANNEL_LIFETIME_MS = 600_000;
/** ...and its number and peer stay taken for 5 minutes after it expired. */
export const CHANNEL_COOLDOWN_MS = 300_000;

export interface PermissionState {
  /** Canonical text (RFC 5952 for IPv6). */
  readonly ip: string;
  readonly family: 4 | 6;
  /** Asked for with createPermission (as opposed to only implied by channels). */
  explicit: boolean;
  /** Wanted channels to peers at this IP: ChannelBind needs the permission kept alive. */
  channels: number;
  created: boolean;
  inFlight: boolean;
  refreshAt: number;
}

export interface ChannelState {
  readonly number: number;
  readonly peer: TransportAddress;
  readonly peerKey: string;
  readonly ip: string;
  wanted: boolean;
  bound: boolean;
  inFlight: boolean;
  refreshAt: number;
  /** When the server's binding ends if not refreshed (0 before the first success). */
  expiresAt: number;
}

export class Wants {
  /** By canonical IP text. */
  readonly permissions = new Map<string, PermissionState>();
  readonly channels = new Map<number, ChannelState>();
  /** By `${ip}|${port}`. */
  readonly channelsByPeer = new Map<string, ChannelState>();
  #nextChannel = MIN_CHANNEL;

  addPermission(ip: string, family: 4 | 6): PermissionState {
    const p: PermissionState = {
      ip,
      family,
      explicit: false,
      channels: 0,
      created: false,
      inFlight: false,
      refreshAt: Number.POSITIVE_INFINITY,
    };
    this.permissions.set(ip, p);
    return p;
  }

  /** The permission a channel's peer needs: created (and refreshed) along with the channel. */
  permissionFor(c: ChannelState): PermissionState {
    return this.permissions.get(c.ip) ?? this.addPermission(c.ip, c.peer.family);
  }

  /** `c` no longer needs its peer's permission. */
  releasePermissionRef(c: ChannelState): void {
    const p = this.permissions.get(c.ip);
    if (p === undefined) return;
    p.channels = Math.max(0, p.channels - 1);
    if (p.channels === 0 && !p.explicit) this.permissions.delete(p.ip);
  }

  /** A new channel to `peer` (canonical), on the next free number. */
  addChannel(peer: TransportAddress, peerKey: string): ChannelState {
    const channel: ChannelState = {
      number: this.#freeChannelNumber(),
      peer,
      peerKey,
      ip: peer.address,
      wanted: true,
      bound: false,
      inFlight: false,
      refreshAt: Number.POSITIVE_INFINITY,
      expiresAt: 0,
    };
    this.channels.set(channel.number, channel);
    this.channelsByPeer.set(peerKey, channel);
    this.permissionFor(channel).channels++;
    return channel;
  }

  forgetChannel(c: ChannelState): void {
    if (this.channels.get(c.number) === c) this.channels.delete(c.number);
    if (this.channelsByPeer.get(c.peerKey) === c) this.channelsByPeer.delete(c.peerKey);
  }

  /**
   * A new allocation: wants survive (a runtime re-allocating keeps its permissions and
   * channels), but nothing is granted on it yet.
   */
  restart(): void {
    for (const p of this.permissions.values()) {
      p.created = false;
      p.inFlight = false;
      p.refreshAt = Number.POSITIVE_INFINITY;
    }
    for (const c of [...this.channels.values()]) {
      if (!c.wanted) {
        this.forgetChannel(c);
        continue;
      }
      c.bound = false;
      c.inFlight = false;
      c.refreshAt = Number.POSITIVE_INFINITY;
      c.expiresAt = 0;
    }
  }

  clear(): void {
    this.permissions.clear();
    this.channels.clear();
    this.channelsByPeer.clear();
  }

  /** RFC 8656 §12: numbers 0x4000-0x4FFF, the next free one after the last handed out. */
  #freeChannelNumber(): number {
    const span = MAX_CHANNEL - MIN_CHANNEL + 1;
    for (let i = 0; i < span; i++) {
      const n = MIN_CHANNEL + ((this.#nextChannel - MIN_CHANNEL + i) % span);
      if (!this.channels.has(n)) {
        this.#nextChannel = n + 1 > MAX_CHANNEL ? MIN_CHANNEL : n + 1;
        return n;
      }
    }
    throw new RangeError("all 4096 channel numbers are in use");
  }
}
