// Where TURN credentials come from, and when to fetch them again.
//
// - token:  TURN REST API credentials derived locally (draft-uberti-behave-turn-rest-00 §2.2, as
//           coturn's use-auth-secret): username "<now+ttl>:<name>", password
//           base64(HMAC-SHA1(token, username)).
// - url:    GET returns {"username","password","ttl","uris"} (the same JSON, minted by the platform
//           so the token never leaves it).
// - static: a long-term user configured on the relay.
//
// A relay ties an allocation to the USERNAME that created it (RFC 8656 §7: another one gets 441),
// and REST usernames carry their expiry; so credentials are not swapped under a live allocation:
// each allocation keeps the credentials it was made with, and a tunnel whose credentials come
// within RENEW_MARGIN of their end re-allocates with fresh ones (see tunnel.ts).

import { get as httpGet } from "node:http";
import { get as httpsGet } from "node:https";
import { mintRestCredentials } from "@turnpike/relay-core";
import type { CredentialsConfig } from "./config.js";

export interface TurnCredentials {
  readonly username: string;
  readonly password: string;
  /** Wall-clock ms after which the relay refuses them; Infinity for static users. */
  readonly expiresAt: number;
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
      };
      return { get: async () => c };
    }
    case "token":
      return cached(nowMs, async () => {
        const now = nowMs();
        const c = mintRestCredentials(
          config.token,
          Math.floor(now / 1000),
          config.ttl,
          config.name,
        );
        return {
          username: c.username,
          password: c.password,
          expiresAt: now + config.ttl * 1000,
          ttlMs: config.ttl * 1000,
        };
      });
    case "url": {
      const fetchJson = options.fetchJson ?? fetchJsonOverHttp;
      return cached(nowMs, async () => {
        const body = (await fetchJson(config.url)) as Record<string, unknown> | null;
        const username = body?.username;
        const password = body?.password ?? body?.credential;
        const ttl = Number(body?.ttl ?? 86400);
        if (typeof username !== "string" || typeof password !== "string" || !(ttl > 0)) {
          throw new Error(`${config.url} did not answer {"username","password","ttl"}`);
        }
        const now = nowMs();
        return { username, password, expiresAt: now + ttl * 1000, ttlMs: ttl * 1000 };
      });
    }
  }
}

function cached(
  nowMs: () => number,
  fetch: () => Promise<TurnCredentials & { ttlMs: number }>,
): CredentialSource {
  let current: (TurnCredentials & { renewAt: number }) | undefined;
  let pending: Promise<TurnCredentials> | undefined;
  return {
    get() {
      if (current !== undefined && nowMs() < current.renewAt) return Promise.resolve(current);
      pending ??= fetch()
        .then((c) => {
          current = { ...c, renewAt: c.expiresAt - c.ttlMs * (1 - RENEW_FRACTION) };
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
  return new Promise((resolve, reject) => {
    const get = url.startsWith("https:") ? httpsGet : httpGet;
    const req = get(url, { timeout: 10_000, headers: { accept: "application/json" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
        if (body.length > 65536) req.destroy(new Error(`${url}: answer too large`));
      });
      res.on("end", () => {
        if (res.statusCode !== 200) return reject(new Error(`${url}: HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(body));
        } catch {
          reject(new Error(`${url}: answer is not JSON`));
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${url}: timed out`)));
    req.on("error", reject);
  });
}
