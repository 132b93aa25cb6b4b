// turnpike-tunnel's reference page (docs/turnpike-tunnel.md): the option table (every option,
// its variable, type and default) and `list --help` come from the code; the rest (exit codes,
// signals, files, the admin API) is written here, next to the table, as data.
// test/reference-page.test.ts fails when the committed page differs;
// `node scripts/cli-docs.mjs --write` rewrites it.

import { renderCliReference, withHelpWidth } from "@turnpike/runtime-kit";
import { parseTunnelArgs } from "./commands.js";
import { OPTION_SET, PROGRAM_NAME } from "./options.js";

/** `list --help` is rendered at this width, whatever the terminal generating the page. */
const HELP_WIDTH = 100;

export function renderTunnelReference(): string {
  const listHelp = withHelpWidth(HELP_WIDTH, () => {
    const parsed = parseTunnelArgs(["list", "--help"], {});
    return parsed.command === "help" ? parsed.text : "";
  });
  return renderCliReference({
    program: PROGRAM_NAME,
    regenerate: "node scripts/cli-docs.mjs --write",
    summary:
      "Exposes private TCP and UDP services through a TURN relay with outbound connections only: one allocation per service and relay address, reconnects with exponential backoff and full jitter, credential renewal in place, access windows, an owner-only admin API and OTLP metrics. packages/tunnel-client/README.md explains the runbook and the security model; this page lists what the program accepts. It has no reload: a changed option takes a restart (services can be added and removed through the admin API).",
    usage: [
      `${PROGRAM_NAME} --relay URI --expose NAME=tcp://HOST:PORT --allow-peer IP [options]`,
      `${PROGRAM_NAME} list [--admin unix:PATH|URL] [--admin-token TOKEN] [--json]`,
    ],
    options: OPTION_SET,
    subcommands: [{ name: "list", help: listHelp }],
    endpoints: [
      ["`GET /health` on `--admin-listen`", '`{"status":"ok","tunnels":N,"ready":N}`'],
      [
        "`GET /list`",
        "one row per service and relay address: state (connecting, allocating, ready, backoff, refused, closed-window, stopped), relayed address, pinned port, last error, counters",
      ],
      ["`POST /expose` (JSON)", "adds a service; 201 with its tunnels"],
      ["`DELETE /expose/ID`", "removes a service, releasing its allocations; 204"],
    ],
    exitCodes: [
      ["0", "stopped by SIGTERM or SIGINT (allocations released); --help, --version, list"],
      ["1", "a second signal while stopping, an uncaught error, `list` could not ask the tunnel"],
      ["2", "a bad option or value: one line on stderr naming the option"],
    ],
    signals: [
      [
        "SIGTERM, SIGINT",
        "release every allocation (Refresh with lifetime 0), close the admin API, flush metrics, exit 0; a second signal exits at once (1)",
      ],
    ],
    files: [
      ["`--config FILE` (`TURNPIKE_CONFIG`)", "JSON object of options, read at start"],
      ["`--ca FILE`", "PEM CA certificates for turns: relays, read at start"],
      [
        "the admin socket (`--admin-listen unix:PATH`)",
        "mode 0600 in a directory only its user may write; default $XDG_RUNTIME_DIR/turnpike-tunnel/admin.sock (root: /run/turnpike-tunnel/admin.sock)",
      ],
    ],
    environment: [
      [
        "`OTLP_GRPC_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`",
        "export metrics over OTLP gRPC there (first set wins, in that order)",
      ],
      [
        "`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`",
        "the resource (service.name default turnpike-tunnel)",
      ],
      [
        "`OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_METRIC_EXPORT_TIMEOUT`",
        "ms between exports and per export",
      ],
      ["`OTEL_SDK_DISABLED=true`", "no OTLP export"],
    ],
  });
}
