// The revocation list: credentials refused before they expire (the platform withdrew them).
//
// It names principals (credentials.ts), not usernames, so that every principal can be named and
// none by accident. Entries:
//
//   static:NAME        the static user NAME (NAME may contain ':', even start with digits)
//   rest:USER          TURN REST credentials of USER, pinned or not: "<expiry>:USER" and
//                      "<expiry>:USER;port=<P>" for every P (a reconnecting tunnel cannot dodge
//                      the list by asking for another port)
//   rest:USER;port=P   only the credentials pinned to P ("<expiry>:USER;port=P")
//   rest-expiry:E      the TURN REST credentials "E" (an expiry, no user part)
//   NAME               every principal that goes by NAME: static:NAME, rest:NAME (pins
//                      included) and rest-expiry:NAME
//
// An entry starting with one of the three prefixes is always read as that form: a static user
// whose name begins with "rest:" is revoked as "static:rest:...". A plain entry is deliberately
// broad (what an operator typing a name means); the prefixed forms single one principal out.

import {
  EXPIRY_ONLY_PRINCIPAL,
  type Principal,
  REST_PRINCIPAL,
  STATIC_PRINCIPAL,
} from "./credentials.js";
import { parsePinnedUser } from "./pinned-username.js";

export class RevocationList {
  /** static: and rest-expiry: principals, named exactly. */
  readonly #principals = new Set<string>();
  /** REST users (a <user> part) whose credentials are revoked: pinned ones too, unless the
   * entry itself names a pin. */
  readonly #restUsers = new Set<string>();
  readonly size: number;

  constructor(entries: Iterable<string>) {
    let size = 0;
    for (const entry of entries) {
      if (typeof entry !== "string" || entry === "") continue;
      size++;
      if (entry.startsWith(REST_PRINCIPAL)) {
        this.#restUsers.add(entry.slice(REST_PRINCIPAL.length));
      } else if (entry.startsWith(STATIC_PRINCIPAL) || entry.startsWith(EXPIRY_ONLY_PRINCIPAL)) {
        this.#principals.add(entry);
      } else {
        this.#principals.add(STATIC_PRINCIPAL + entry);
        this.#principals.add(EXPIRY_ONLY_PRINCIPAL + entry);
        this.#restUsers.add(entry);
      }
    }
    this.size = size;
  }

  /** True when the list names `principal` (see the entry forms above). */
  revokes(principal: Principal): boolean {
    if (this.size === 0) return false;
    if (this.#principals.has(principal)) return true;
    if (!principal.startsWith(REST_PRINCIPAL)) return false;
    const user = principal.slice(REST_PRINCIPAL.length);
    if (this.#restUsers.has(user)) return true;
    const pinned = parsePinnedUser(user);
    return pinned !== undefined && this.#restUsers.has(pinned.user);
  }
}
