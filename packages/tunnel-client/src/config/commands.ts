// The command line: `turnpike-tunnel [options]` runs the tunnel, `turnpike-tunnel list` asks a
// running one for its tunnels, and --help / --version. yargs is reached only here, through
// runtime-kit's parser (ARCHITECTURE.md, "Layers").
//
// Precedence for `run`: flag > environment TURNPIKE_<OPTION> > `--config FILE` (JSON) > default.
// Every value is validated; a wrong one is a ConfigError whose one-line message names its source.

import { isAbsolute } from "node:path";
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
import { defaultAdminSocket } from "../admin-socket.js";
import { ENV_PREFIX, envName, OPTION_SET, PROGRAM_NAME, TUNNEL_VERSION } from "./options.js";
import { resolveRunConfig } from "./resolve.js";
import type { InfoCommand, ListCommand, ParsedCommand } from "./types.js";
import { httpUrl, parseAdminListen, readConfigJson } from "./values.js";

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
    adminToken: layers[0]!.values["admin-token"] !== undefined,
  };
  return resolveRunConfig(OPTION_SET.resolve(layers), fromFlag, env);
}

function parseList(argv: readonly string[], env: NodeJS.ProcessEnv): ListCommand | InfoCommand {
  const parser = buildParser(argv, "list");
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  const admin =
    args.admin === undefined
      ? adminOfListen(env)
      : checkAdminAddress(one(args.admin as Scalar, "--admin"));
  const token =
    args.adminToken !== undefined
      ? one(args.adminToken as Scalar, "--admin-token")
      : env[envName("admin-token")]?.trim() || undefined;
  return { command: "list", admin, adminToken: token, json: args.json === true };
}

/** --admin: unix:/PATH, or an http(s) URL. */
function checkAdminAddress(admin: string): string {
  if (admin.startsWith("unix:")) {
    if (!isAbsolute(admin.slice(5))) fail("--admin", "unix:/ABSOLUTE/PATH", admin);
    return admin;
  }
  if (httpUrl(admin) === undefined) {
    fail("--admin", "unix:/PATH or a URL like http://127.0.0.1:7070", admin);
  }
  return admin;
}

/** Where a tunnel started with this environment listens: TURNPIKE_ADMIN_LISTEN, or the default. */
function adminOfListen(env: NodeJS.ProcessEnv): string {
  const where = envName("admin-listen");
  const text = env[where]?.trim();
  const listen = text ? parseAdminListen(text, where) : { path: defaultAdminSocket(env) };
  if (listen === null) {
    throw new ConfigError(`${where} is off: no admin API to ask (pass --admin unix:PATH or URL)`);
  }
  if ("path" in listen) return `unix:${listen.path}`;
  const host = listen.host === "0.0.0.0" ? "127.0.0.1" : listen.host === "::" ? "::1" : listen.host;
  return `http://${host.includes(":") ? `[${host}]` : host}:${listen.port}`;
}

/** yargs for `run` (the option table) or `list` (its own three options). */
function buildParser(argv: readonly string[], mode: "run" | "list") {
  const parser = baseParser(argv, PROGRAM_NAME);
  if (mode === "list") {
    return parser
      .usage(
        `Usage: ${PROGRAM_NAME} list [--admin unix:PATH|URL] [--admin-token TOKEN] [--json]\n\nPrints the tunnels of a running ${PROGRAM_NAME} (GET /list of its admin API).`,
      )
      .option("admin", {
        type: "string",
        requiresArg: true,
        describe: `the admin API: unix:PATH, or a base URL http://HOST:PORT [default: from ${envName("admin-listen")}, else the default socket, unix:$XDG_RUNTIME_DIR/turnpike-tunnel/admin.sock (root: unix:/run/turnpike-tunnel/admin.sock)]`,
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
      `       ${PROGRAM_NAME} list [--admin unix:PATH|URL] [--admin-token TOKEN]\n\n` +
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
