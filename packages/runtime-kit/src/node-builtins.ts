// node:http, node:https and node:tls for the relay and the tunnel, loaded where a feature that
// is configured uses them, and without an ES module namespace.
//
// Why not `import { createServer } from "node:http"`: to link that import, Node builds
// node:http's ES namespace, and building it reads every export, the lazy ones too. node:http's
// WebSocket, CloseEvent and MessageEvent getters load undici, and undici loads http2, zlib, web
// streams, worker_threads and perf_hooks, none of which the relay or the tunnel uses. Measured
// on Node 22.23, a bare node idle: an ES import of node:http adds 14.1 MB of RSS (7.3 MB
// private), process.getBuiltinModule("node:http") 3.2 MB (0.8 private). node:tls and
// node:https cost 6.1-7.2 MB however they are loaded (OpenSSL's TLS code and contexts), so they
// are loaded by the code that opens a TLS listener or connection or calls an https URL, not at
// start: a relay without --tls-listen or a health listener holds none of them.
//
// process.getBuiltinModule is Node >= 22.3 (package engines: ^22.15, 24, >= 26). It returns the
// module's CommonJS exports, the same object a require() would; the types below are node's own.

import type * as Http from "node:http";
import type * as Https from "node:https";
import type * as Tls from "node:tls";

export function nodeHttp(): typeof Http {
  return process.getBuiltinModule("node:http");
}

export function nodeHttps(): typeof Https {
  return process.getBuiltinModule("node:https");
}

export function nodeTls(): typeof Tls {
  return process.getBuiltinModule("node:tls");
}
