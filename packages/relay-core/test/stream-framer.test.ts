// StreamFramer (RFC 8656 §12.5, RFC 8489 §6.2.2): a TCP/TLS byte stream of STUN messages and
// padded ChannelData frames, cut at any point, yields exactly the original frames.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeChannelData } from "../src/codec/channel-data.js";
import { AttributeType } from "../src/codec/constants.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import {
  MAX_STREAM_FRAME,
  MAX_UNAUTHENTICATED_STREAM_FRAME,
  StreamFramer,
} from "../src/codec/stream-framer.js";

/** A frame as the framer must return it, and the bytes it takes on the wire (with padding). */
interface WireFrame {
  readonly frame: Uint8Array;
  readonly wire: Uint8Array;
}

const stunFrameArb: fc.Arbitrary<WireFrame> = fc
  .tuple(
    fc.uint8Array({ minLength: 12, maxLength: 12 }),
    fc.uint8Array({ maxLength: 80 }),
    fc.boolean(),
  )
  .map(([tid, data, fp]) => {
    const b = new StunMessageBuilder(0x006, 1, tid).bytes(AttributeType.Data, data);
    if (fp) b.fingerprint();
    const frame = b.build();
    return { frame, wire: frame };
  });

const channelFrameArb: fc.Arbitrary<WireFrame> = fc
  .tuple(fc.integer({ min: 0x4000, max: 0x4fff }), fc.uint8Array({ maxLength: 80 }))
  .map(([channel, data]) => {
    const wire = encodeChannelData(channel, data, true);
    return { frame: wire.subarray(0, 4 + data.length), wire };
  });

const framesArb = fc.array(fc.oneof(stunFrameArb, channelFrameArb), {
  minLength: 1,
  maxLength: 12,
});

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Feed `chunks` in order, collecting frames (copied: a frame may be a view of a chunk). */
function feed(framer: StreamFramer, chunks: readonly Uint8Array[], maxBuffered?: number[]) {
  const out: number[][] = [];
  for (const chunk of chunks) {
    framer.push(chunk);
    for (let f = framer.next(); f !== undefined; f = framer.next()) out.push(Array.from(f));
    maxBuffered?.push(framer.bufferedBytes);
  }
  return out;
}

function cutAt(stream: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, stream.length]) {
    chunks.push(stream.subarray(prev, p));
    prev = p;
  }
  return chunks;
}

describe("StreamFramer", () => {
  it("yields exactly the original frames when the stream is split at every single point", () => {
    const frames: WireFrame[] = [
      { frame: new StunMessageBuilder(1, 0, new Uint8Array(12)).fingerprint().build(), wire: [] },
      { frame: encodeChannelData(0x4001, Uint8Array.of(1, 2, 3)), wire: [] },
      { frame: encodeChannelData(0x4002, new Uint8Array(0)), wire: [] },
      {
        frame: new StunMessageBuilder(7, 1, new Uint8Array(12).fill(9))
          .bytes(AttributeType.Data, Uint8Array.of(5, 6, 7, 8, 9))
          .build(),
        wire: [],
      },
      { frame: encodeChannelData(0x4fff, new Uint8Array(33).fill(7)), wire: [] },
    ].map(({ frame }) => {
      const isChannel = (frame[0]! & 0xc0) === 0x40;
      const wire = isChannel
        ? encodeChannelData((frame[0]! << 8) | frame[1]!, frame.subarray(4), true)
        : frame;
      return { frame, wire };
    });
    const stream = concat(frames.map((f) => f.wire));
    const want = frames.map((f) => Array.from(f.frame));
    for (let i = 0; i <= stream.length; i++) {
      for (let j = i; j <= stream.length; j += 7) {
        const got = feed(new StreamFramer(), [
          stream.subarray(0, i),
          stream.subarray(i, j),
          stream.subarray(j),
        ]);
        expect(got, `split at ${i}/${j}`).toEqual(want);
      }
    }
  });

  it("yields exactly the original frames under any chunking, one byte at a time included", () => {
    fc.assert(
      fc.property(framesArb, fc.array(fc.nat(), { maxLength: 40 }), (frames, cuts) => {
        const stream = concat(frames.map((f) => f.wire));
        const want = frames.map((f) => Array.from(f.frame));
        expect(feed(new StreamFramer(), cutAt(stream, cuts))).toEqual(want);
        const bytes = Array.from(stream, (_, i) => stream.subarray(i, i + 1));
        expect(feed(new StreamFramer(), bytes)).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });

  it("never buffers more than the frame being assembled", () => {
    fc.assert(
      fc.property(framesArb, fc.array(fc.nat(), { maxLength: 40 }), (frames, cuts) => {
        const stream = concat(frames.map((f) => f.wire));
        const framer = new StreamFramer();
        const largest = Math.max(...frames.map((f) => f.wire.length));
        const buffered: number[] = [];
        feed(framer, cutAt(stream, cuts), buffered);
        for (const b of buffered) expect(b).toBeLessThan(largest);
        expect(framer.bufferedBytes).toBe(0);
        expect(framer.error).toBeUndefined();
      }),
      { numRuns: 300 },
    );
    // The largest frame a peer can announce: bounded by MAX_STREAM_FRAME.
    const framer = new StreamFramer();
    framer.push(Uint8Array.of(0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42));
    expect(framer.next()).toBeUndefined();
    expect(framer.bufferedBytes).toBeLessThanOrEqual(MAX_STREAM_FRAME);
  });

  it("allocates for the bytes that arrived, never for the length a header merely claims", () => {
    // A header claiming the most a frame may hold (`40 00 ff ff`, ChannelData of 65,535 bytes),
    // then silence: many such connections must not make the relay hold 64 KiB each.
    for (const header of [Uint8Array.of(0x40, 0x00, 0xff, 0xff), Uint8Array.of(0, 1, 0xff, 0xfc)]) {
      const framer = new StreamFramer();
      framer.push(header);
      expect(framer.next()).toBeUndefined();
      expect(framer.bufferCapacity).toBeLessThanOrEqual(256);
      // Then a dribble of body bytes: the buffer stays within twice what arrived.
      const body = new Uint8Array(3000).fill(7);
      for (let i = 0; i < body.length; i += 100) {
        framer.push(body.subarray(i, i + 100));
        expect(framer.next()).toBeUndefined();
        expect(framer.bufferCapacity).toBeLessThanOrEqual(Math.max(256, 2 * framer.bufferedBytes));
      }
      expect(framer.bufferedBytes).toBe(4 + body.length);
    }
  });

  it("yields large frames intact however they are cut (the growing buffer)", () => {
    const bigFrameArb = fc
      .tuple(fc.integer({ min: 0x4000, max: 0x4fff }), fc.integer({ min: 200, max: 20_000 }))
      .map(([channel, n]) => {
        const data = new Uint8Array(n).map((_, i) => i * 7);
        const wire = encodeChannelData(channel, data, true);
        return { frame: wire.subarray(0, 4 + n), wire };
      });
    fc.assert(
      fc.property(
        fc.array(fc.oneof(bigFrameArb, stunFrameArb), { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat(), { maxLength: 60 }),
        (frames, cuts) => {
          const stream = concat(frames.map((f) => f.wire));
          const framer = new StreamFramer();
          expect(feed(framer, cutAt(stream, cuts))).toEqual(frames.map((f) => Array.from(f.frame)));
          expect(framer.bufferCapacity).toBe(0);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("breaks the stream (oversized-frame) at a header claiming more than maxFrameLength", () => {
    const limit = MAX_UNAUTHENTICATED_STREAM_FRAME;
    const small = new StunMessageBuilder(1, 0, new Uint8Array(12)).fingerprint().build();
    // Whole in one chunk, or the header split across reads: refused at the header either way.
    for (const chunks of [
      [concat([small, Uint8Array.of(0x40, 0x00, 0xff, 0xff)])],
      [concat([small, Uint8Array.of(0x00, 0x01)]), Uint8Array.of(0x10, 0x00)],
    ]) {
      const framer = new StreamFramer({ maxFrameLength: limit });
      expect(feed(framer, chunks)).toEqual([Array.from(small)]);
      expect(framer.error).toBe("oversized-frame");
      expect(framer.bufferCapacity).toBe(0);
    }
    // A frame of exactly the limit passes; raising the limit (authenticated) lets big ones in.
    const framer = new StreamFramer({ maxFrameLength: limit });
    const atLimit = encodeChannelData(0x4000, new Uint8Array(limit - 4), true);
    expect(feed(framer, [atLimit])).toHaveLength(1);
    framer.maxFrameLength = MAX_STREAM_FRAME;
    expect(feed(framer, [encodeChannelData(0x4000, new Uint8Array(60_000), true)])).toHaveLength(1);
    expect(framer.error).toBeUndefined();
  });

  it("sets error on a first byte that is neither STUN nor ChannelData, and stops", () => {
    for (const first of [0x80, 0xc0, 0xff]) {
      const framer = new StreamFramer();
      const good = encodeChannelData(0x4000, Uint8Array.of(1), true);
      framer.push(concat([good, Uint8Array.of(first, 0, 0, 4, 1, 2, 3, 4), good]));
      expect(Array.from(framer.next()!)).toEqual([0x40, 0, 0, 1, 1]);
      expect(framer.next()).toBeUndefined();
      expect(framer.error).toBe("invalid-frame");
      expect(framer.next()).toBeUndefined();
      expect(framer.bufferedBytes).toBe(0);
    }
  });

  it("sets error on a STUN length that is not a multiple of 4 (RFC 8489 §5), even split", () => {
    const framer = new StreamFramer();
    framer.push(Uint8Array.of(0x00, 0x01));
    expect(framer.next()).toBeUndefined();
    expect(framer.error).toBeUndefined();
    framer.push(Uint8Array.of(0x00, 0x05, 0x21, 0x12));
    expect(framer.next()).toBeUndefined();
    expect(framer.error).toBe("invalid-frame");
  });

  it("never throws on arbitrary chunks (drained before each push)", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), (chunks) => {
        const framer = new StreamFramer();
        for (const c of chunks) {
          framer.push(c);
          for (let f = framer.next(); f !== undefined; f = framer.next()) {
            expect(f.length).toBeGreaterThanOrEqual(4);
          }
          expect(framer.bufferedBytes).toBeLessThanOrEqual(MAX_STREAM_FRAME + 3);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
