// Messages between workers pass through the supervisor (shared/worker-link.ts says what they
// are: RFC 6062 hand-overs, pinned-port releases, taken reservations). It forwards each to the
// worker it names, answers for a worker that is not there, and tells the others when one ends.

import type { RoutedMessage } from "../shared/worker-link.js";
import type { WorkerSlot } from "./spawn.js";

/** Forward `message` from worker `from` to worker `to`. */
export function routeBetweenWorkers(
  slots: readonly WorkerSlot[],
  from: WorkerSlot,
  to: number,
  message: unknown,
): void {
  const target = slots[to];
  if (target?.serving) {
    target.post({ t: "route", from: from.index, message });
    return;
  }
  // That worker is restarting: what was meant for its predecessor reaches nobody. The sender
  // learns at once (a held RFC 6062 connection closes, a pinned-port release counts as done)
  // instead of waiting for an answer that never comes.
  from.post({
    t: "route",
    from: to,
    message: { r: "undeliverable", message: message as RoutedMessage } satisfies RoutedMessage,
  });
}

/** Worker `gone` ended: the others drop RFC 6062 connections they held for it or adopted from it. */
export function announceWorkerGone(slots: readonly WorkerSlot[], gone: WorkerSlot): void {
  for (const other of slots) {
    if (other !== gone && other.ready) {
      other.post({
        t: "route",
        from: gone.index,
        message: { r: "worker-gone", index: gone.index } satisfies RoutedMessage,
      });
    }
  }
}
