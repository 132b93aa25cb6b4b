// TURN REST API credentials ("A REST API For Access To TURN Services", the scheme coturn calls
// use-auth-secret): username = "<unix expiry>:<user>", password = base64(HMAC-SHA1(secret, username)).
import { createHmac } from "node:crypto";

export interface RestCredentials {
  username: string;
  credential: string;
}

export function restCredentials(
  secret: string,
  user = "interop",
  ttlSeconds = 3600,
): RestCredentials {
  const username = `${Math.floor(Date.now() / 1000) + ttlSeconds}:${user}`;
  const credential = createHmac("sha1", secret).update(username).digest("base64");
  return { username, credential };
}
