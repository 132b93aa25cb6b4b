// Asking the workers and waiting for them. A question (the allocations, ending some, a reload)
// carries an id its answer comes back with; a command (drain, close) is answered by its own
// reply. Every wait has a deadline, and a worker that ends stops being waited for, so an
// operator's call never hangs on a worker that died.

import type { SupervisorMessage } from "./messages.js";
import type { WorkerSlot } from "./spawn.js";

/** How long a question waits for each worker's answer. */
const ANSWER_TIMEOUT_MS = 1000;

export class WorkerQuestions {
  /** Questions waiting for their answers, by id. */
  readonly #answers = new Map<number, (value: unknown) => void>();
  #nextId = 1;

  /**
   * Ask every serving worker, or `only` that one (`post` sends the question with its id); the
   * answers within a second, undefined for a worker that did not answer.
   */
  ask(
    slots: readonly WorkerSlot[],
    post: (slot: WorkerSlot, id: number) => void,
    only?: number,
  ): Promise<unknown[]> {
    const live = slots.filter((s) => s.serving && (only === undefined || s.index === only));
    return Promise.all(
      live.map(
        (s) =>
          new Promise<unknown>((resolve) => {
            const id = this.#nextId++;
            const timer = setTimeout(() => {
              this.#answers.delete(id);
              resolve(undefined);
            }, ANSWER_TIMEOUT_MS);
            this.#answers.set(id, (value) => {
              clearTimeout(timer);
              this.#answers.delete(id);
              resolve(value);
            });
            post(s, id);
          }),
      ),
    );
  }

  /** A worker's `answer` message. */
  answered(id: number, value: unknown): void {
    this.#answers.get(id)?.(value);
  }
}

/** Send `message` to every live worker; resolves when each sent `reply`, ended, or time ran out. */
export function commandAll(
  slots: readonly WorkerSlot[],
  message: SupervisorMessage,
  reply: "drained" | "closed",
  timeoutMs: number,
): Promise<void> {
  const waits = slots
    .filter((s) => s.running)
    .map(
      (s) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(done, timeoutMs);
          function done() {
            clearTimeout(timer);
            s.waiters.delete(reply);
            resolve();
          }
          s.waiters.set(reply, done);
          s.post(message);
        }),
    );
  return Promise.all(waits).then(() => undefined);
}
