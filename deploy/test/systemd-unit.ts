// Reading systemd units the way systemd does for the settings the Turnpike unit uses, and
// starting its ExecStart the way systemd would (systemd.exec(5)), for a test machine without a
// running systemd: EnvironmentFile= read by the manager (as root) and overriding Environment=,
// ConfigurationDirectory= created and given its mode, LoadCredential= files copied into a
// credentials directory only the service's user can read (%d), ExecStart run as that user.
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { outsideEnv, type Started, startUntilReady } from "./launch.js";

/** Key -> values (in order) of one [Section] of unit texts (a unit and then its drop-ins). */
export function unitSection(texts: readonly string[], section: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const text of texts) {
    let current = "";
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
      const header = /^\[(.+)\]$/.exec(line);
      if (header) {
        current = header[1]!;
        continue;
      }
      if (current !== section) continue;
      const [k, v] = splitOnce(line, "=");
      out.set(k, [...(out.get(k) ?? []), v]);
    }
  }
  return out;
}

/** The one value of a setting (the last assignment wins, as in systemd). */
export function setting(service: Map<string, string[]>, key: string): string | undefined {
  return service.get(key)?.at(-1);
}

export function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line.trim() === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const [k, v] = splitOnce(line, "=");
    env[k.trim()] = v.trim();
  }
  return env;
}

export function splitOnce(s: string, sep: string): [string, string] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, ""] : [s.slice(0, i), s.slice(i + 1)];
}

export interface AsSystemd {
  /** [Service] of the unit and its drop-ins, as installed (paths already mapped). */
  readonly service: Map<string, string[]>;
  /** Where systemd's /etc is on this machine (ConfigurationDirectory= goes below it). */
  readonly etc: string;
  /** A directory for the credentials directory (systemd's /run/credentials/UNIT). */
  readonly run: string;
  /** The dynamic user: a uid and gid that own none of the files. */
  readonly uid: number;
  readonly gid: number;
  readonly healthPort: number;
}

/** Does at start what systemd does for these settings, then runs ExecStart until ready. */
export async function startAsSystemd(unit: AsSystemd): Promise<Started> {
  const { service } = unit;
  const configDirs = (setting(service, "ConfigurationDirectory") ?? "").split(/\s+/);
  // Created if missing; the innermost directory gets the mode (default 0755), owner unchanged.
  const mode = Number.parseInt(setting(service, "ConfigurationDirectoryMode") ?? "0755", 8);
  for (const dir of configDirs.filter((d) => d !== "")) {
    mkdirSync(join(unit.etc, dir), { recursive: true });
    chmodSync(join(unit.etc, dir), mode);
  }
  // Private read-only copies of each credential, readable by the service's user only.
  // (/run/credentials is traversable by everyone; the unit's directory in it is not.)
  const credentials = join(unit.run, "credentials");
  mkdirSync(credentials, { recursive: true });
  chmodSync(unit.run, 0o755);
  for (const entry of service.get("LoadCredential") ?? []) {
    const [id, path] = splitOnce(entry, ":");
    const copy = join(credentials, id);
    copyFileSync(path, copy);
    chmodSync(copy, 0o400);
    chownSync(copy, unit.uid, unit.gid);
  }
  chmodSync(credentials, 0o500);
  chownSync(credentials, unit.uid, unit.gid);
  const env: Record<string, string> = {};
  for (const line of service.get("Environment") ?? []) {
    for (const assignment of line.split(/\s+/)) {
      const [k, v] = splitOnce(assignment, "=");
      env[k] = v.replaceAll("%d", credentials);
    }
  }
  // Read by the manager, as root, and winning over Environment=.
  for (const file of service.get("EnvironmentFile") ?? []) {
    Object.assign(env, parseEnvFile(readFileSync(file, "utf8")));
  }
  env.CREDENTIALS_DIRECTORY = credentials;
  const [command, ...args] = (setting(service, "ExecStart") ?? "").split(/\s+/);
  return startUntilReady(command!, args, {
    env: outsideEnv(env),
    cwd: "/",
    healthPort: unit.healthPort,
    uid: unit.uid,
    gid: unit.gid,
  });
}
