import { readFileSync } from "node:fs";

// Read once from package.json so `--version`, the default SOFTWARE attribute and the
// service.version resource attribute can never disagree. The path is the same relative to
// src/ (tests) and dist/ (the built CLI).
function readVersion(): string {
  try {
    const text = readFileSync(new URL("../package.json", import.meta.url), "utf8");
    const version = (JSON.parse(text) as { version?: unknown }).version;
    return typeof version === "string" ? version : "0.0.0";
  } catch {
    return "0.0.0";
  }
}

export const RELAY_VERSION: string = readVersion();
