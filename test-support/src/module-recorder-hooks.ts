// Module customization hooks (node:module register) that append every URL a process resolves
// to a file, one a line. Registered by module-recorder.ts's launcher; they run on Node's hooks
// thread, so they write the file themselves.
import { appendFileSync } from "node:fs";

let out: string | undefined;

export function initialize(data: { out: string }): void {
  out = data.out;
}

interface Resolved {
  url: string;
}

export async function resolve(
  specifier: string,
  context: unknown,
  next: (specifier: string, context: unknown) => Promise<Resolved>,
): Promise<Resolved> {
  const resolved = await next(specifier, context);
  if (out !== undefined) appendFileSync(out, `${resolved.url}\n`);
  return resolved;
}
