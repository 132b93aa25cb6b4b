// Reading a Prometheus text exposition (the relay's /metrics) in tests: counters summed by one
// label or matched by several, and the relay's drop counter by reason, which many suites check.

const SAMPLE = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/;

/** `name{labels} value` lines of metrics matching `metric`, summed per label `by`. */
export function countersBy(text: string, metric: RegExp, by: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m || !metric.test(m[1]!)) continue;
    const label = new RegExp(`${by}="([^"]*)"`).exec(m[2] ?? "")?.[1] ?? "";
    out.set(label, (out.get(label) ?? 0) + Number(m[3]));
  }
  return out;
}

/** The sum of the samples of metrics matching `metric` that carry every one of `labels`. */
export function counterValue(text: string, metric: RegExp, labels: Record<string, string>): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = SAMPLE.exec(line);
    if (!m || !metric.test(m[1]!)) continue;
    const ok = Object.entries(labels).every(([k, v]) => (m[2] ?? "").includes(`${k}="${v}"`));
    if (ok) total += Number(m[3]);
  }
  return total;
}

const DROPPED = /^turn_dropped_packets(_total)?$/;

/** turn.dropped.packets by reason. */
export function droppedByReason(text: string): Map<string, number> {
  return countersBy(text, DROPPED, "reason");
}

/** turn.dropped.packets of one reason (0 when none was counted). */
export function dropped(text: string, reason: string): number {
  return counterValue(text, DROPPED, { reason });
}
