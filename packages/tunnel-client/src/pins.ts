// Pinned relay ports, process-wide. Pinned credentials name one relay port (relay-core
// auth/pinned-username.ts): two services of this process (or two relay URIs resolving to one
// address) using them would take the port from each other on every reconnect. The supervisor
// holds one PinClaims for all its tunnels; each tunnel's lifecycle claims its pin before it
// allocates.

import type { TunnelLifecycle } from "./lifecycle.js";

/** The first live tunnel keeps a pin; the others fail with the reason (and retry, in case it goes away). */
export class PinClaims {
  readonly #holders = new Map<string, TunnelLifecycle>();

  /** Claims `pin` ("relayIp|port") for `tunnel`; returns the live tunnel holding it, if another. */
  claim(pin: string, tunnel: TunnelLifecycle): TunnelLifecycle | undefined {
    const holder = this.#holders.get(pin);
    if (holder !== undefined && holder !== tunnel && holder.state !== "stopped") return holder;
    this.#holders.set(pin, tunnel);
    return undefined;
  }
}
