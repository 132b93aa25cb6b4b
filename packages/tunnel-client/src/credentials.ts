// Where TURN credentials come from, and when to fetch them again.
//
// - token:  TURN REST API credentials derived locally (draft-uberti-behave-turn-rest-00 §2.2, as
//           coturn's use-auth-secret): username "<now+ttl>:<name>", password
//           base64(HMAC-SHA1(token, username)).
// - url:    GET returns {"username","password","ttl","uris"} (the same JSON, minted by the platform
//           so the token never leaves it).
// - static: a long-term user configured on the relay.
// - key:    username and password from a tunnel key (TURNPIKE_KEY) the platform minted with
//           `turnpike-relay credentials`: fixed for the life of the process (nothing to renew
//           them from), refused locally once the REST expiry inside has passed.
//
// Renewal (see lifecycle.ts): once RENEW_FRACTION of their ttl has passed, a tunnel swaps fresh
// credentials into its live allocation (TurnClient.setCredentials + Refresh). turnpike-relay
// accepts them because it ties an allocation to the REST <user> part, not the whole username;
// a relay that insists on the USERNAME that created the allocation (RFC 8656 §7: 441, as coturn
// does) makes the tunnel re-allocate instead, shortly before the old credentials expire.

import { mintRestCredentials, parseRestUsername } from "@turnpike/relay-core/client";
import { nodeHttp, nodeHttps } from "@turnpike/runtime-kit";
import type { CredentialsConfig } from "./config/index.js";

export interface TurnCredentials {
  readonly username: string;
  readonly password: string;
  /** Wall-clock ms after which the relay refuses them; Infinity for static users. */
  readonly expiresAt: number;
  /** Wall-clock ms from which they should be replaced (RENEW_FRACTION of the ttl used). */
  readonly renewAt: number;
}

export interface CredentialSource {
  /** Credentials valid for a while yet (cached until RENEW_FRACTION of their ttl is used). */
  get(): Promise<TurnCredentials>;
}

/** Renew once this fraction of the ttl has passed. */
export const RENEW_FRACTION = 0.8;

export function createCredentialSource(
  config: CredentialsConfig,
  options: { nowMs?: () => number; fetchJson?: (url: string) => Promise<unknown> } = {},
): CredentialSource {
  const nowMs = options.nowMs ?? Date.now;
  switch (config.kind) {
    case "static": {
      const c = {
        username: config.username,
        password: config.password,
        expiresAt: Number.POSITIVE_INFINITY,
        renewAt: Number.POSITIVE_INFINITY,
      };
      return { get: async () => c };
    }
    case "key": {
      // No renewal (there is no source to renew from): the deadlines stay infinite so the
      // tunnel never re-allocates on its own, and once the expiry in the username has passed
      // the tunnel says why it cannot connect instead of collecting 401s.
      const c = {
        username: config.username,
        password: config.password,
        expiresAt: Number.POSITIVE_INFINITY,
        renewAt: Number.POSITIVE_INFINITY,
      };
      const expiry = parseRestUsername(config.username)?.expiry;
      return {
        get: async () => {
          if (expiry !== undefined && nowMs() >= expiry * 1000) {
            const at = new Date(expiry * 1000).toISOString();
            throw new Error(
              `the --key credentials expired at ${at}: ask the platform for a new key`,
            );
          }
          return c;
        },
      };
    }
    case "token":
      return cached(nowMs, async () => {
        const nowSeconds = Math.floor(nowMs() / 1000);
        const c = mintRestCredentials(config.token, nowSeconds, config.ttl, config.name);
        // The username carries whole seconds: the relay refuses it from that second on.
        return {
          username: c.username,
          password: c.password,
          expiresAt: (nowSeconds + config.ttl) * 1000,
          ttlMs: config.ttl * 1000,
        };
      });
    case "url": {
      const fetchJson = options.fetchJson ?? fetchJsonOverHttp;
      return cached(nowMs, async () => {
        const asked = nowMs();
        const body = (await fetchJson(config.url)) as Record<string, unknown> | null;
        const username = body?.username;
        const password = body?.password ?? body?.credential;
        const ttl = Number(body?.ttl ?? 86400);
        if (typeof username !== "string" || typeof password !== "string" || !(ttl > 0)) {
          throw new Error(`${redactUrl(config.url)} did not answer {"username","password","ttl"}`);
        }
        // Minted at the earliest when we asked, in whole seconds; a REST username says exactly.
        let expiresAt = asked - 1000 + ttl * 1000;
        const rest = parseRestUsername(username);
        if (rest !== undefined && rest.expiry * 1000 > asked)
          expiresAt = Math.min(expiresAt, rest.expiry * 1000);
        return { username, password, expiresAt, ttlMs: ttl * 1000 };
      });
    }
  }
}

function cached(
  nowMs: () => number,
  fetch: () => Promise<Omit<TurnCredentials, "renewAt"> & { ttlMs: number }>,
): CredentialSource {
  let current: TurnCredentials | undefined;
  let pending: Promise<TurnCredentials> | undefined;
  return {
    get() {
      if (current !== undefined && nowMs() < current.renewAt) return Promise.resolve(current);
      pending ??= fetch()
        .then((c) => {
          current = {
            username: c.username,
            password: c.password,
            expiresAt: c.expiresAt,
            renewAt: c.expiresAt - c.ttlMs * (1 - RENEW_FRACTION),
          };
          return current;
        })
        .finally(() => {
          pending = undefined;
        });
      return pending;
    },
  };
}

/** GET url -> parsed JSON; bounded (10 s, 64 KiB). */
export function fetchJsonOverHttp(url: string): Promise<unknown> {
  const shown = redactUrl(url);
  return new Promise((resolve, reject) => {
    // Loaded here, not imported: runtime-kit node-builtins.ts.
    const get = url.startsWith("https:") ? nodeHttps().get : nodeHttp().get;
    const req = get(url, { timeout: 10_000, headers: { accept: "application/json" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
        if (body.length > 65536) req.destroy(new Error(`${shown}: answer too large`));
      });
      res.on("end", () => {
        if (res.statusCode !== 200) return reject(new Error(`${shown}: HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(body));
        } catch {
          reject(new Error(`${shown}: answer is not JSON`));
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${shown}: timed out`)));
    req.on("error", (err) => reject(new Error(`${shown}: ${err.message}`)));
  });
}

/**
 * The URL as it may appear in /list and logs: no userinfo, query or fragment, which is where a
 * platform puts the secret that mints credentials (`?key=...`, `https://user:pass@...`).
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "the credentials URL";
  }
}
