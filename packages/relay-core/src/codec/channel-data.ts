/**
 * ChannelData framing (RFC 8656 §12.4): a 4-byte header (channel number, length) then the
 * application data. Over TCP/TLS the frame is padded to a multiple of 4 bytes (§12.5), and the
 * padding is not counted in the length.
 */
export const CHANNEL_DATA_HEADER_LENGTH = 4;

/** First two bits 0b01: a ChannelData message, never STUN (whose first two bits are 0b00). */
export function isChannelData(bytes: Uint8Array): boolean {
  return bytes.length >= CHANNEL_DATA_HEADER_LENGTH && (bytes[0]! & 0xc0) === 0x40;
}

/** Writes the 4-byte header at `offset` (the caller's buffer has room). */
export function writeChannelDataHeader(
  target: Uint8Array,
  offset: number,
  channel: number,
  length: number,
): void {
  target[offset] = channel >>> 8;
  target[offset + 1] = channel & 0xff;
  target[offset + 2] = length >>> 8;
  target[offset + 3] = length & 0xff;
}

/** A whole ChannelData message; `padded` for stream transports (RFC 8656 §12.5). */
export function encodeChannelData(channel: number, data: Uint8Array, padded = false): Uint8Array {
  const size = CHANNEL_DATA_HEADER_LENGTH + (padded ? (data.length + 3) & ~3 : data.length);
  const out = new Uint8Array(size);
  writeChannelDataHeader(out, 0, channel, data.length);
  out.set(data, CHANNEL_DATA_HEADER_LENGTH);
  return out;
}

export interface ChannelDataView {
  readonly channel: number;
  /** The application data is `bytes.subarray(start, end)`. */
  readonly start: number;
  readonly end: number;
}

/**
 * Decode a ChannelData message without copying. Over UDP the datagram may carry trailing
 * padding (RFC 8656 §12.5, §12.6: the receiver ignores it); a length beyond the bytes is malformed.
 */
export function decodeChannelData(bytes: Uint8Array): ChannelDataView | undefined {
  if (!isChannelData(bytes)) return undefined;
  const channel = (bytes[0]! << 8) | bytes[1]!;
  const length = (bytes[2]! << 8) | bytes[3]!;
  if (CHANNEL_DATA_HEADER_LENGTH + length > bytes.length) return undefined;
  return { channel, start: CHANNEL_DATA_HEADER_LENGTH, end: CHANNEL_DATA_HEADER_LENGTH + length };
}
