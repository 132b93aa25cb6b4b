// Where a tunnel allocates: its relay address, or the one a draining relay sent it to. A relay
// that stops granting allocations (SIGTERM, a rolling upgrade) answers Allocate with 300 Try
// Alternate and an ALTERNATE-SERVER (RFC 8489 §10); the client tries that server instead, at
// once. RFC 8489 §10 leaves loop prevention to the client: a tunnel follows a redirect from one
// relay at most once in REDIRECT_WINDOW_MS, so two relays pointing at each other (both draining)
// cost two redirects and then an ordinary backoff, not a loop. The tunnel goes back to its own
// relay address whenever it loses the one it was sent to. Pure: time is a parameter.

/** A relay's transport address (what ALTERNATE-SERVER carries: an address, not a name). */
export interface RelayAddress {
  readonly family: 4 | 6;
  readonly ip: string;
  readonly port: number;
}

/** A relay that redirected the tunnel is not followed again before this much time passed. */
export const REDIRECT_WINDOW_MS = 5 * 60_000;

export class Redirects {
  #current: RelayAddress;
  /** When the tunnel last followed a redirect from each relay ("ip|port"). */
  readonly #followed = new Map<string, number>();

  constructor(readonly home: RelayAddress) {
    this.#current = home;
  }

  /** Where the next attempt allocates. */
  get current(): RelayAddress {
    return this.#current;
  }

  get redirected(): boolean {
    return this.#current !== this.home;
  }

  /**
   * The current relay answered 300 with `to`: true and `to` is current, unless this relay
   * redirected the tunnel less than REDIRECT_WINDOW_MS ago (then false: a loop).
   */
  follow(to: RelayAddress, now: number): boolean {
    const from = key(this.#current);
    const last = this.#followed.get(from);
    if (last !== undefined && now - last < REDIRECT_WINDOW_MS) return false;
    for (const [k, at] of this.#followed)
      if (now - at >= REDIRECT_WINDOW_MS) this.#followed.delete(k);
    this.#followed.set(from, now);
    this.#current = to;
    return true;
  }

  /** Back to the tunnel's own relay address (the one it was sent to is lost, or a new start). */
  goHome(): void {
    this.#current = this.home;
  }
}

function key(a: RelayAddress): string {
  return `${a.ip}|${a.port}`;
}
