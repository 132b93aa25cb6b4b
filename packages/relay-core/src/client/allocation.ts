/**
 * The one allocation as the client knows it (RFC 8656 §7): where it stands, the addresses the
 * Allocate success gave, the lifetime the server last granted, and when to refresh it so that
 * it never lapses (§8).
 */
import type { TransportAddress } from "../codec/address.js";
import type { TurnClientState } from "./types.js";

export class ClientAllocation {
  state: TurnClientState = "idle";
  /** XOR-RELAYED-ADDRESS of the Allocate success. */
  relayed: TransportAddress | undefined;
  /** XOR-MAPPED-ADDRESS of the Allocate success (our address as the server sees it). */
  mapped: TransportAddress | undefined;
  /** Seconds granted by the last Allocate/Refresh success. */
  lifetime = 0;
  /** When the next Refresh is due; infinite without an allocation to keep. */
  refreshAt = Number.POSITIVE_INFINITY;

  /** An Allocate or Refresh success granted `lifetime` seconds (RFC 8656 §7.3, §8). */
  granted(lifetime: number, now: number): void {
    this.lifetime = lifetime;
    // A minute of margin (room for a whole UDP transaction, 39.5 s), or a quarter of a short one.
    const delay = lifetime >= 240 ? lifetime - 60 : lifetime * 0.75;
    this.refreshAt = now + delay * 1000;
  }

  /** Nothing more to refresh: the allocation failed or was released. */
  end(state: "failed" | "released"): void {
    this.state = state;
    this.refreshAt = Number.POSITIVE_INFINITY;
  }

  /** A new Allocate on the same client: nothing of the last allocation is kept. */
  reset(): void {
    this.relayed = undefined;
    this.mapped = undefined;
    this.refreshAt = Number.POSITIVE_INFINITY;
    this.lifetime = 0;
  }
}
