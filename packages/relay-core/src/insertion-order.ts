/**
 * Maps used as bounded caches: a Map iterates in insertion order, so its first entry is the
 * oldest. Caches whose entries share one lifetime also expire front first.
 */

/** Makes room for one more entry in `map`, holding at most `cap`: the oldest goes. */
export function evictOldestAtCap<K, V>(map: Map<K, V>, cap: number): void {
  if (map.size < cap) return;
  const oldest = map.keys().next();
  if (oldest.done !== true) map.delete(oldest.value);
}

/** Drops entries from the front while `expired` holds for them, `max` at the most. */
export function dropExpiredOldest<K, V>(
  map: Map<K, V>,
  expired: (value: V) => boolean,
  max = Number.POSITIVE_INFINITY,
): void {
  let dropped = 0;
  for (const [key, value] of map) {
    if (dropped >= max || !expired(value)) return;
    map.delete(key);
    dropped++;
  }
}
