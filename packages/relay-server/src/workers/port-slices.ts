// Each worker relays on its own contiguous slice of the relay port range, so a peer's datagram
// arrives on the relay socket of the worker that owns the allocation (no data crosses threads).

/** The relay port range cut into `count` contiguous slices, one per worker. */
export function portSlice(
  min: number,
  max: number,
  index: number,
  count: number,
): { minPort: number; maxPort: number } {
  const span = max - min + 1;
  return {
    minPort: min + Math.floor((index * span) / count),
    maxPort: min + Math.floor(((index + 1) * span) / count) - 1,
  };
}
