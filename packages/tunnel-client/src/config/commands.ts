// The command line: `turnpike-tunnel [options]` runs the tunnel, `turnpike-tunnel list` asks a
// running one for its tunnels, and --help / --version. yargs is reached only here, through
// runtime-kit's parser (ARCHITECTURE.md, "Layers").
//
// Precedence for `run`: flag > environment TURNPIKE_<OPTION> > `--config FILE` (JSON) > default.
// Every value is validated; a wrong one is a ConfigError whose one-line message names its source.

import {
  type ArgvRecord,
  addConfigOption,
  addTableOptions,
  baseParser,
  ConfigError,
  fail,
  helpText,
  one,
  type Scalar,
} from "@turnpike/runtime-kit";
import { ENV_PREFIX, envName, OPTION_SET, PROGRAM_NAME, TUNNEL_VERSION } from "./options.js";
import { resolveRunConfig } from "./resolve.js";
import type { InfoCommand, ListCommand, ParsedCommand } from "./types.js";
import { parseListen, readConfigJson } from "./values.js";

export function parseTunnelArgs(argv: readonly string[], env: NodeJS.ProcessEnv): ParsedCommand {
  if (argv[0] === "list") return parseList(argv.slice(1), env);
  const parser = buildParser(argv, "run");
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  if (args.version === true) return { command: "version", text: TUNNEL_VERSION };
  const positional = (args._ as unknown[] | undefined) ?? [];
  if (positional.length > 0)
    throw new ConfigError(`unknown command ${JSON.stringify(String(positional[0]))}`);
  const layers = [OPTION_SET.flagLayer(args), OPTION_SET.envLayer(env)];
  const file =
    args.config !== undefined
      ? ([one(args.config as Scalar, "--config"), "--config"] as const)
      : env[`${ENV_PREFIX}CONFIG`]?.trim()
        ? ([env[`${ENV_PREFIX}CONFIG`]!.trim(), `${ENV_PREFIX}CONFIG`] as const)
        : undefined;
  if (file !== undefined) layers.push(OPTION_SET.fileLayer(file[0], file[1], readConfigJson));
  const fromFlag = {
    token: layers[0]!.values.token !== undefined,
    key: layers[0]!.values.key !== undefined,
  };
  return resolveRunConfig(OPTION_SET.resolve(layers), fromFlag, env);
}

function parseList(argv: readonly string[], env: NodeJS.ProcessEnv): ListCommand | InfoCommand {
  const parser = buildParser(argv, "list");
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  let admin = args.admin === undefined ? undefined : one(args.admin as Scalar, "--admin");
  if (admin === undefined) {
    const listen = env[envName("admin-listen")]?.trim();
    const at =
      listen && listen !== "off" ? parseListen(listen, envName("admin-listen")) : undefined;
    const host = at === undefined ? "127.0.0.1" : at.host.includes(":") ? `[${at.host}]` : at.host;
    admin = `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${at?.port ?? 7070}`;
  }
  try {
    new URL(admin);
  } catch {
    fail("--admin", "a URL like http://127.0.0.1:7070", admin);
  }
  const token =
    args.adminToken !== undefined
      ? one(args.adminToken as Scalar, "--admin-token")
      : env[envName("admin-token")]?.trim() || undefined;
  return { command: "list", admin, adminToken: token, json: args.json === true };
}

/** yargs for `run` (the option table) or `list` (its own three options). */
function buildParser(argv: readonly string[], mode: "run" | "list") {
  const parser = baseParser(argv, PROGRAM_NAME);
  if (mode === "list") {
    return parser
      .usage(
        `Usage: ${PROGRAM_NAME} list [--admin URL] [--admin-token TOKEN] [--json]\n\nPrints the tunnels of a running ${PROGRAM_NAME} (GET /list of its admin API).`,
      )
      .option("admin", {
        type: "string",
        requiresArg: true,
        describe: `admin API base URL [default: http://<${envName("admin-listen")}> or http://127.0.0.1:7070]`,
      })
      .option("admin-token", {
        type: "string",
        requiresArg: true,
        describe: `bearer token [env: ${envName("admin-token")}]`,
      })
      .option("json", { type: "boolean", describe: "print the raw JSON" });
  }
  addConfigOption(parser, OPTION_SET).usage(
    `Usage: ${PROGRAM_NAME} --relay URI --expose NAME=tcp://HOST:PORT --allow-peer IP [options]\n` +
      `       ${PROGRAM_NAME} list [--admin URL] [--admin-token TOKEN]\n\n` +
      "Exposes private TCP/UDP services through a TURN relay (RFC 8656, RFC 6062) with outbound\n" +
      "connections only. Every option is also read from the environment (TURNPIKE_<OPTION>,\n" +
      "lists comma-separated, windows ';'-separated) and from --config FILE (JSON).\n" +
      "Precedence: flag > environment > config file > default.",
  );
  addTableOptions(parser, OPTION_SET);
  parser.epilog(
    "Credentials: TURNPIKE_KEY (from the platform), TURNPIKE_TOKEN (derived REST credentials),\n" +
      "--username/--password, or --credentials-url.\n" +
      "Metrics: set OTLP_GRPC_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT) to export over OTLP gRPC.",
  );
  return parser;
}
