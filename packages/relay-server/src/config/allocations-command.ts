// `turnpike-relay allocations`: the arguments of the command that prints a running relay's
// live allocations (GET /v1/allocations, discovery.ts). The health listener and the admin
// token come from the relay's own environment and config file when run next to it, so it
// needs no flags there.

import { ConfigError, fail, one, type Scalar } from "@turnpike/runtime-kit";
import { ENV_PREFIX, envName, OPTIONS, PROGRAM_NAME } from "./options.js";
import { commandParser, readSubcommand } from "./sources.js";
import type { AllocationsCommand, InfoCommand } from "./types.js";
import { formatSocketAddress, isUnspecified, parseAllocationRowId } from "./values.js";

export const ALLOCATIONS_USAGE = `${PROGRAM_NAME} allocations [--url URL] [--user NAME | --end-user NAME | --end ID] [--json]`;

export function parseAllocations(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): AllocationsCommand | InfoCommand {
  const read = readSubcommand(allocationsParser(argv), "allocations", env, [
    "admin-token",
    "health-listen",
  ]);
  if ("command" in read) return read;
  const { args, values: v } = read;
  if (v["admin-token"] === undefined) {
    throw new ConfigError(
      `allocations needs the relay's admin token: export ${ENV_PREFIX}ADMIN_TOKEN (or pass --admin-token)`,
    );
  }
  let url: string;
  if (args.url !== undefined) {
    url = one(args.url as Scalar, "--url");
    let ok = false;
    try {
      ok = /^https?:$/.test(new URL(url).protocol);
    } catch {
      ok = false;
    }
    if (!ok) fail("--url", "a URL like http://127.0.0.1:8080", url);
  } else {
    const at = v["health-listen"] ?? { ip: "127.0.0.1", port: 8080, family: 4 as const };
    const ip = isUnspecified(at.ip) ? (at.family === 6 ? "::1" : "127.0.0.1") : at.ip;
    url = `http://${formatSocketAddress({ ip, port: at.port })}`;
  }
  const user = args.user === undefined ? undefined : one(args.user as Scalar, "--user");
  const endUser =
    args.endUser === undefined ? undefined : one(args.endUser as Scalar, "--end-user");
  const endId = args.end === undefined ? undefined : one(args.end as Scalar, "--end");
  if ([user, endUser, endId].filter((x) => x !== undefined).length > 1) {
    throw new ConfigError("--user, --end-user and --end go one at a time");
  }
  if (endUser === "") fail("--end-user", "a user name", endUser);
  if (endId !== undefined && parseAllocationRowId(endId) === undefined) {
    fail("--end", "an allocation id as the ID column shows it, like 0-17", endId);
  }
  return {
    command: "allocations",
    url,
    adminToken: v["admin-token"],
    user,
    end:
      endUser !== undefined ? { user: endUser } : endId !== undefined ? { id: endId } : undefined,
    json: args.json === true,
  };
}

function allocationsParser(argv: readonly string[]) {
  return commandParser(argv)
    .usage(
      `Usage: ${ALLOCATIONS_USAGE}\n\n` +
        `Prints the live allocations of a running ${PROGRAM_NAME} (GET /v1/allocations on its health\n` +
        `listener, the discovery API): id, user, pinned port, relayed address, client, peers.\n` +
        "--end-user and --end end allocations instead (DELETE) and print how many ended; ending\n" +
        "is not revoking: the client may allocate again (revoke it to keep it out).\n" +
        `Needs the relay's admin token in ${ENV_PREFIX}ADMIN_TOKEN (or --admin-token).`,
    )
    .option("url", {
      type: "string",
      requiresArg: true,
      describe: `base URL of the relay's health listener [default: http://<${envName("health-listen")}> or http://127.0.0.1:8080]`,
    })
    .option("user", { type: "string", requiresArg: true, describe: "only this user's" })
    .option("end-user", {
      type: "string",
      requiresArg: true,
      describe:
        "end every allocation of this user now (DELETE; NAME, static:NAME, rest:USER[;port=P] or rest-expiry:E, as --revoke reads them); the credentials stay valid",
    })
    .option("end", {
      type: "string",
      requiresArg: true,
      describe: "end this allocation now (its ID as the table shows it, e.g. 0-17)",
    })
    .option("json", { type: "boolean", describe: "print the raw JSON" })
    .option("admin-token", {
      type: "string",
      requiresArg: true,
      describe: `bearer token [env: ${envName("admin-token")}]`,
    })
    .option("health-listen", {
      type: "string",
      requiresArg: true,
      describe: `${OPTIONS["health-listen"].describe} (for the default URL) [env: ${envName("health-listen")}]`,
    });
}
