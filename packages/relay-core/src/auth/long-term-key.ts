// Long-term credential keys, RFC 8489 §9.2.2 (and RFC 5389 §15.4); a server keeps
// the key, never the password (RFC 8656 §6).
//
// The RFC runs realm and password through OpaqueString (RFC 8265, formerly SASLprep) first.
// We deliberately hash the raw UTF-8 instead: coturn does no SASLprep, nor do browsers'
// TURN clients, and for the ASCII credentials everyone uses (including every TURN REST
// password, which is base64) the two are identical. Interop beats a profile nobody applies.

import { hash } from "node:crypto";

function digest(algorithm: "md5" | "sha256", text: string): Uint8Array {
  // One-shot: no Hash object per key (a TURN REST username is new every time it is minted).
  const binary = hash(algorithm, text, "binary");
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** key = MD5(username ":" realm ":" password): MESSAGE-INTEGRITY, PASSWORD-ALGORITHM MD5 (0x0001). */
export function longTermKeyMd5(username: string, realm: string, password: string): Uint8Array {
  return digest("md5", `${username}:${realm}:${password}`);
}

/** key = SHA-256(username ":" realm ":" password): PASSWORD-ALGORITHM SHA-256 (0x0002), RFC 8489 §18.5. */
export function longTermKeySha256(username: string, realm: string, password: string): Uint8Array {
  return digest("sha256", `${username}:${realm}:${password}`);
}

/** USERHASH value, RFC 8489 §14.4: SHA-256(username ":" realm). */
export function userHash(username: string, realm: string): Uint8Array {
  return digest("sha256", `${username}:${realm}`);
}
