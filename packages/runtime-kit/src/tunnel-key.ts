// The tunnel key: one opaque string holding a tunnel's TURN credentials (username and
// password), so a platform hands a customer a single value (TURNPIKE_KEY) instead of two, and
// never the relay's token. `turnpike-relay credentials` prints it; `turnpike-tunnel --key`
// reads it.
//
//   key = "tpk1." + base64url(JSON {"u": username, "p": password})
//
// The prefix names the format (and makes a key recognisable in a secrets scanner); the body is
// plain encoding, not encryption: the key is exactly as secret as the password inside it.

const PREFIX = "tpk1.";
/** Far above any real key (usernames are at most 509 bytes, RFC 8489 §14.3). */
const MAX_KEY_LENGTH = 4096;

export interface TunnelCredentials {
  readonly username: string;
  readonly password: string;
}

export function encodeTunnelKey(c: TunnelCredentials): string {
  const body = Buffer.from(JSON.stringify({ u: c.username, p: c.password }), "utf8");
  return `${PREFIX}${body.toString("base64url")}`;
}

/** The credentials in `key`, or why it is not a tunnel key (the message never repeats the key). */
export function decodeTunnelKey(key: string): TunnelCredentials | { error: string } {
  const text = key.trim();
  if (!text.startsWith(PREFIX) || text.length > MAX_KEY_LENGTH) {
    return {
      error: `not a tunnel key (expected "${PREFIX}...", as \`turnpike-relay credentials\` prints)`,
    };
  }
  const body = text.slice(PREFIX.length);
  if (!/^[A-Za-z0-9_-]+$/.test(body))
    return { error: "a tunnel key is base64url after its prefix" };
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
  } catch {
    return { error: "the tunnel key is damaged (not JSON inside)" };
  }
  const v = value as { u?: unknown; p?: unknown } | null;
  if (typeof v?.u !== "string" || typeof v.p !== "string" || v.u === "" || v.p === "") {
    return { error: "the tunnel key holds no username and password" };
  }
  return { username: v.u, password: v.p };
}
