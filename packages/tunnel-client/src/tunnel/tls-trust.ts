// How a tunnel trusts a turns: relay, for the control connection and for every RFC 6062 data
// connection alike: the certificate must chain to a trusted CA and name the URI's host.

import { isIP } from "node:net";
import type { ConnectionOptions, SecureContext } from "node:tls";
import { nodeTls } from "@turnpike/runtime-kit";
import type { TurnUri } from "../uri.js";

/** Trust for TLS control and data connections (turns:). */
export interface TlsTrust {
  /** PEM certificates to trust; undefined = Node's bundled roots only. */
  readonly ca?: readonly string[];
  /** false only for tests (--insecure-skip-verify). */
  readonly rejectUnauthorized: boolean;
  /** The name the certificate must carry, and the SNI (--tls-servername); default the URI's host name. */
  readonly servername?: string;
}

/**
 * TLS towards the relay: the certificate must name the URI's host (SNI and identity check use
 * the name, the socket the resolved address; an IP literal needs an IP subjectAltName), or
 * the --tls-servername when one is set (a turns:IP URI whose certificate names a DNS name).
 */
export function relayTlsOptions(
  uri: TurnUri,
  relay: { readonly ip: string; readonly port: number },
  trust: TlsTrust | undefined,
): ConnectionOptions {
  const named = isIP(uri.host) === 0;
  return {
    host: relay.ip,
    port: relay.port,
    // Node checks the certificate against `servername` when set (tls.checkServerIdentity).
    servername: trust?.servername ?? (named ? uri.host : undefined),
    // Without SNI Node checks the identity against `host`: the URI's IP, same as relayIp.
    ...(trust?.ca !== undefined ? { secureContext: trustContext(trust.ca) } : {}),
    rejectUnauthorized: trust?.rejectUnauthorized ?? true,
  };
}

const trustContexts = new WeakMap<readonly string[], SecureContext>();

/** Node's bundled roots plus `ca` (a `ca` option alone would replace them), built once. */
function trustContext(ca: readonly string[]): SecureContext {
  let ctx = trustContexts.get(ca);
  if (ctx === undefined) {
    // node:tls is loaded by a turns: relay only (runtime-kit node-builtins.ts).
    const { createSecureContext, rootCertificates } = nodeTls();
    ctx = createSecureContext({ ca: [...rootCertificates, ...ca] });
    trustContexts.set(ca, ctx);
  }
  return ctx;
}
