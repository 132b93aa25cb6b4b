// How an operator runs this CLI again, for the next step a program prints ("mint credentials
// with: TURNPIKE_TOKEN=... <command> credentials"). The bare program name is found only where it
// is on PATH, which in a clone of the repository (pnpm puts bins in node_modules/.bin) and in an
// npm install into a prefix it is not: print what works where this process was started from.

import { existsSync } from "node:fs";
import { dirname, join, parse } from "node:path";

/**
 * The command that starts `program` the way `script` (this process's `process.argv[1]`) was:
 * - in a pnpm workspace (a clone): `pnpm exec <program>`;
 * - installed by npm into a prefix: `<prefix>/node_modules/.bin/<program>`, or for a global
 *   install (`<prefix>/lib/node_modules`) `<prefix>/bin/<program>`;
 * - otherwise `node <script>` (the container image's `/app/bin/turnpike-relay.js`), or the
 *   program name when there is no script.
 */
export function cliCommand(
  program: string,
  script: string | undefined,
  exists: (path: string) => boolean = existsSync,
): string {
  if (script === undefined || script === "") return program;
  for (let dir = dirname(script); ; dir = dirname(dir)) {
    if (exists(join(dir, "pnpm-workspace.yaml"))) return `pnpm exec ${program}`;
    if (dir === parse(dir).root) break;
  }
  const at = script.lastIndexOf("/node_modules/");
  if (at >= 0) {
    const prefix = script.slice(0, at);
    if (prefix.endsWith("/lib")) {
      const bin = join(prefix.slice(0, -"/lib".length), "bin", program);
      if (exists(bin)) return bin;
    }
    const bin = join(prefix, "node_modules", ".bin", program);
    if (exists(bin)) return bin;
  }
  return `node ${script}`;
}
