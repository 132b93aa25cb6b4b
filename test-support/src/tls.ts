// A throwaway self-signed certificate for TURNS tests (CN=localhost, one day), made with the
// system openssl; callers check `requireTools("openssl")` first.
import { spawnSync } from "node:child_process";
import { join } from "node:path";

export function selfSignedCert(dir: string): { cert: string; key: string } {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  const gen = spawnSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      "/CN=localhost",
      "-days",
      "1",
      "-keyout",
      key,
      "-out",
      cert,
    ],
    { encoding: "utf8", timeout: 20_000 },
  );
  if (gen.status !== 0) throw new Error(`openssl failed: ${gen.stderr}`);
  return { cert, key };
}
