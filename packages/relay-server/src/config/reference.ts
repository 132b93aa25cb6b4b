// turnpike-relay's reference page (docs/turnpike-relay.md): the option table (every option, its
// variable, type, default and what SIGHUP does with it) and the subcommands' --help come from
// the code; the rest (exit codes, signals, files, endpoints) is written here, next to the
// table, as data. test/reference-page.test.ts fails when the committed page differs;
// `node scripts/cli-docs.mjs --write` rewrites it.

import { renderCliReference, withHelpWidth } from "@turnpike/runtime-kit";
import { ALLOCATIONS_USAGE } from "./allocations-command.js";
import { CREDENTIALS_USAGE } from "./credentials-command.js";
import { ENV_PREFIX, OPTION_SET, PROGRAM_NAME } from "./options.js";
import { parseRelayArgs } from "./parse.js";

/** Subcommand help is rendered at this width, whatever the terminal generating the page. */
const HELP_WIDTH = 100;

export function renderRelayReference(): string {
  const help = (subcommand: string): string =>
    withHelpWidth(HELP_WIDTH, () => {
      const parsed = parseRelayArgs([subcommand, "--help"], {});
      return parsed.command === "help" ? parsed.text : "";
    });
  return renderCliReference({
    program: PROGRAM_NAME,
    regenerate: "node scripts/cli-docs.mjs --write",
    summary: `The Turnpike TURN/STUN relay (STUN RFC 8489, TURN RFC 8656, TCP relaying RFC 6062): UDP, TCP and TLS listeners, relay sockets, TURN REST API credentials from a shared secret (coturn \`use-auth-secret\` compatible), pinned relay ports, revocation, a safe-by-default peer policy, quotas and bandwidth limits, health and discovery endpoints, OTLP and Prometheus metrics, and a draining shutdown. The repository's README explains the concepts and runbooks; this page lists what the program accepts.`,
    usage: [`${PROGRAM_NAME} [options]`, CREDENTIALS_USAGE, ALLOCATIONS_USAGE],
    options: OPTION_SET,
    reload: `SIGHUP (\`systemctl reload turnpike-relay\`, \`kill -HUP <pid>\`); a source that cannot be read keeps the values in force and logs an error`,
    subcommands: [
      { name: "credentials", help: help("credentials") },
      { name: "allocations", help: help("allocations") },
    ],
    endpoints: [
      ["`GET /healthz` on `--health-listen`", "200 while the process runs"],
      [
        "`GET /readyz`",
        '200 once every listener of every worker is bound and the relay is not draining (`"status": "degraded"` while a crashed worker restarts), else 503',
      ],
      [
        "`GET /v1/allocations[?user=NAME]`",
        `the live allocations (id, user, pinned port, relayed and client addresses, peers, times); needs \`Authorization: Bearer\` ${ENV_PREFIX}ADMIN_TOKEN, off (404) without it`,
      ],
      [
        "`DELETE /v1/allocations?user=NAME`, `DELETE /v1/allocations/ID`",
        '`{"ended": N}`: ends a user\'s allocations (NAME as --revoke reads it) or one by its id, on every worker; the credentials stay valid',
      ],
      ["`GET /metrics` on `--prometheus-listen`", "Prometheus text format"],
    ],
    exitCodes: [
      [
        "0",
        "stopped by SIGTERM (after the drain) or SIGINT; --help, --version, a subcommand that did its job",
      ],
      [
        "1",
        "failed at run time: a second SIGTERM during a drain, an uncaught error, a subcommand's request failed",
      ],
      [
        "2",
        "a bad option or value, or one the host refuses at start (a --listen address in use, a --relay-ip not on this host): one line on stderr naming the option",
      ],
    ],
    signals: [
      [
        "SIGTERM",
        "drain: refuse new allocations (300 with --alternate-server, else 508), wait up to --drain-timeout for live ones, close, exit 0; a second SIGTERM exits at once (1)",
      ],
      ["SIGINT", "close at once, cleanly (during a drain too), exit 0"],
      ["SIGHUP", 'reload: the "live" options above'],
    ],
    files: [
      ["`--config FILE` (`TURNPIKE_CONFIG`)", "JSON object of options, read at start"],
      ["`--revoke-file FILE`", "one user per line (`#` comments), read at start and on SIGHUP"],
      ["`--tls-cert FILE`, `--tls-key FILE`", "PEM, read at start and on SIGHUP"],
      [
        "/proc/sys/net/ipv4/ip_local_port_range, ip_local_reserved_ports",
        "read at start: relay ports the kernel may hand out as ephemeral ports are a warning naming the sysctl that reserves them",
      ],
    ],
    environment: [
      [
        "`OTLP_GRPC_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`",
        "export metrics over OTLP gRPC there (first set wins, in that order)",
      ],
      [
        "`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`",
        "the resource (service.name default turnpike-relay)",
      ],
      [
        "`OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_METRIC_EXPORT_TIMEOUT`",
        "ms between exports (default 60000) and per export",
      ],
      ["`OTEL_SDK_DISABLED=true`", "no OTLP export"],
    ],
  });
}
