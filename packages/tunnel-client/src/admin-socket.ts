// Where the admin API listens by default: a unix socket only its owner can use. The kernel
// checks who may connect (write permission on the socket file, so mode 0600 means the user
// the tunnel runs as, and root), which no HTTP header can fake and no web page can reach.
//
// Default path: $XDG_RUNTIME_DIR/turnpike-tunnel/admin.sock (the per-user runtime directory,
// mode 0700), /run/turnpike-tunnel/admin.sock for root without it, else
// <tmpdir>/turnpike-tunnel-<uid>/admin.sock. The same rule gives `turnpike-tunnel list` the
// same path, so it finds the API of a tunnel started by the same user with defaults.
//
// Before listening: the socket's directory is created (mode 0700) when missing, and must be
// owned by this user or root and writable by nobody else (or someone else could swap the
// socket for their own); a socket file left by a process that died (kill -9) is removed, one
// that still answers is another process's: refused. The socket is created mode 0600 (umask set
// around the bind, so it is never more open, then chmod).

import { chmodSync, lstatSync, mkdirSync, realpathSync, statSync, unlinkSync } from "node:fs";
import { connect, type Server } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

/** The default admin socket path for the user running this process. */
export function defaultAdminSocket(env: NodeJS.ProcessEnv): string {
  const runtime = env.XDG_RUNTIME_DIR?.trim();
  if (runtime) return join(runtime, "turnpike-tunnel", "admin.sock");
  const uid = process.getuid?.();
  if (uid === 0) return "/run/turnpike-tunnel/admin.sock";
  return join(tmpdir(), `turnpike-tunnel-${uid ?? "user"}`, "admin.sock");
}

/** Listens on `path` owner-only; rejects with a one-line reason. */
export async function listenOwnerOnly(server: Server, path: string): Promise<void> {
  prepareDirectory(dirname(path));
  await removeStaleSocket(path);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // The bind happens inside listen(): the file is born 0600.
    const umask = process.umask(0o177);
    try {
      server.listen({ path }, () => {
        server.off("error", reject);
        resolve();
      });
    } finally {
      process.umask(umask);
    }
  });
  chmodSync(path, 0o600);
}

function prepareDirectory(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const real = realpathSync(dir);
  const st = statSync(real);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
    throw new Error(`${dir} belongs to another user (uid ${st.uid})`);
  }
  if ((st.mode & 0o022) !== 0) {
    throw new Error(
      `${dir} is writable by other users (mode ${(st.mode & 0o7777).toString(8)}): put the socket in a directory only its owner can write`,
    );
  }
}

async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket`);
  // Only a refusal means nobody listens: any other error leaves the file alone.
  const probed = await new Promise<"listening" | "stale" | Error>((resolve) => {
    const probe = connect({ path });
    probe.once("connect", () => {
      probe.destroy();
      resolve("listening");
    });
    probe.once("error", (err: NodeJS.ErrnoException) =>
      resolve(err.code === "ECONNREFUSED" ? "stale" : err),
    );
  });
  if (probed === "listening") throw new Error(`${path} is in use by another process`);
  if (probed instanceof Error) throw new Error(`${path}: ${probed.message}`);
  unlinkSync(path);
}
