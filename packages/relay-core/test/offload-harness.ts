// The runtime's side of channel offload, built only from the server's outputs: the entries a
// kernel map would hold, with the checks a runtime relies on as it applies them in order.
import { expect } from "vitest";
import { AttributeType, Method } from "../src/codec/constants.js";
import type { StunMessageBuilder } from "../src/codec/message-builder.js";
import type { OffloadId } from "../src/ids.js";
import type { TurnServerOutput } from "../src/server/types.js";
import type { OutputOf, TestClient } from "./harness.js";

export type Entry = OutputOf<"offload-channel">;

export const familyOf = (ip: string): 4 | 6 => (ip.includes(":") ? 6 : 4);

/** The offload entries a runtime holds, applied output by output. */
export class OffloadView {
  readonly entries = new Map<OffloadId, Entry>();
  /** Every id ever offered: an ended id is never offered again. */
  readonly #offered = new Set<OffloadId>();

  /** Apply `outputs` in order, as a runtime would; `check` runs before each one. */
  apply(
    outputs: readonly TurnServerOutput[],
    check?: (output: TurnServerOutput) => void,
  ): readonly TurnServerOutput[] {
    for (const o of outputs) {
      check?.(o);
      this.#apply(o);
    }
    return outputs;
  }

  #apply(o: TurnServerOutput): void {
    switch (o.type) {
      case "offload-channel": {
        expect(stringsIn(o), "an offload entry is numbers").toEqual(["offload-channel"]);
        const known = this.entries.get(o.offload);
        if (known !== undefined) {
          // A refresh: the same binding, only the deadline moves.
          expect({ ...o, expiresAt: 0 }).toEqual({ ...known, expiresAt: 0 });
          expect(o.expiresAt).not.toBe(known.expiresAt);
        } else {
          expect(this.#offered.has(o.offload), `offload id ${o.offload} reused`).toBe(false);
          this.#offered.add(o.offload);
        }
        this.entries.set(o.offload, o);
        return;
      }
      case "end-offload":
        expect(this.entries.has(o.offload), `end of unknown offload ${o.offload}`).toBe(true);
        this.entries.delete(o.offload);
        return;
      case "close-relay":
        // Every entry of a relay socket ends before the socket closes...
        expect(this.#where((e) => e.relay === o.relay)).toEqual([]);
        return;
      case "allocation-ended":
        // ... and of an allocation before it is reported ended (its counters are read then).
        expect(this.#where((e) => e.allocation === o.allocation)).toEqual([]);
        return;
      default:
    }
  }

  /** The entries a kernel would use at `now`: their deadline not reached. */
  live(now: number): Entry[] {
    return this.#where((e) => e.expiresAt > now);
  }

  #where(pred: (e: Entry) => boolean): Entry[] {
    return [...this.entries.values()].filter(pred);
  }
}

/** Every string value in `value`, nested (the output's `type` is the only one allowed). */
function stringsIn(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (value === null || typeof value !== "object" || ArrayBuffer.isView(value)) return [];
  return Object.values(value).flatMap(stringsIn);
}

/** An authenticated request (the client's nonce is known by now): every output it queued. */
export function signed(c: TestClient, method: number, fill?: Fill): TurnServerOutput[] {
  c.send(c.buildSigned(method, fill));
  return c.h.drain();
}

type Fill = (b: StunMessageBuilder) => void;

/** The attributes of an Allocate of a UDP relay (dual: IPv4 and IPv6, RFC 8656 §7.2). */
export const allocateFill =
  (lifetime: number | undefined, dual: boolean): Fill =>
  (b) => {
    b.requestedTransport(17);
    if (lifetime !== undefined) b.uint32(AttributeType.Lifetime, lifetime);
    if (dual) b.addressFamily(AttributeType.AdditionalAddressFamily, 6);
  };

/** A Refresh (LIFETIME 0 deletes; with `family`, only that relayed address, §8.2). */
export const refreshFill =
  (lifetime: number | undefined, family?: 4 | 6): Fill =>
  (b) => {
    if (lifetime !== undefined) b.uint32(AttributeType.Lifetime, lifetime);
    if (family !== undefined) b.addressFamily(AttributeType.RequestedAddressFamily, family);
  };

export const permissionFill =
  (...peers: string[]): Fill =>
  (b) => {
    for (const p of peers) {
      b.xorAddress(AttributeType.XorPeerAddress, { family: familyOf(p), address: p, port: 0 });
    }
  };

export const channelBindFill =
  (channel: number, peer: string, port: number): Fill =>
  (b) => {
    b.channelNumber(channel).xorAddress(AttributeType.XorPeerAddress, {
      family: familyOf(peer),
      address: peer,
      port,
    });
  };

export const channelBind = (c: TestClient, channel: number, peer: string, port: number) =>
  signed(c, Method.ChannelBind, channelBindFill(channel, peer, port));

export const createPermission = (c: TestClient, ...peers: string[]) =>
  signed(c, Method.CreatePermission, permissionFill(...peers));

export const refresh = (c: TestClient, lifetime: number, family?: 4 | 6) =>
  signed(c, Method.Refresh, refreshFill(lifetime, family));
