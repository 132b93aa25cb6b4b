// The TURNS certificate chain and private key (--tls-cert, --tls-key), read and checked as a pair
// when the configuration is resolved: at start, and again on every SIGHUP (a renewed
// certificate). A pair that does not load (not PEM, a key that is not the certificate's) is a
// one-line ConfigError, so a reload keeps the pair in use instead of breaking new handshakes.

import { readFileSync } from "node:fs";
import { ConfigError, nodeTls } from "@turnpike/runtime-kit";
import type { TlsPair } from "./types.js";

export function readTlsPair(certPath: string, keyPath: string): TlsPair {
  const cert = readPem(certPath, "--tls-cert");
  const key = readPem(keyPath, "--tls-key");
  try {
    // What a TLS listener does with the pair (tls.Server#setSecureContext): it loads, and the
    // key belongs to the certificate.
    // node:tls only when a pair is configured (runtime-kit node-builtins.ts).
    nodeTls().createSecureContext({ cert, key });
  } catch (err) {
    const reason = (err as Error).message.split("\n")[0]!.replace(/^error:[0-9A-F]+:[^:]*::/, "");
    throw new ConfigError(`--tls-cert and --tls-key are not a usable pair: ${reason}`);
  }
  return { cert, key };
}

function readPem(path: string, option: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(`${option} ${JSON.stringify(path)} is not readable (${code})`);
  }
}
