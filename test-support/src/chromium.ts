// A real Chromium (Debian's /usr/bin/chromium, never a downloaded build: no `playwright install`)
// driven by playwright-core, running two RTCPeerConnections through a TURN server with
// iceTransportPolicy "relay". The page (webrtc/relay-page.html) is served from a throwaway
// node:http server on 127.0.0.1 (http://127.0.0.1 is a secure context, so WebRTC is allowed).
//
// Chromium facts that matter here: it ignores TURN servers on ports below 1024 (use a high port);
// it drops loopback candidates unless started with --allow-loopback-in-peer-connection; QUIC and
// background networking are disabled so the browser opens no connections of its own.
//
// Inside a namespace (spawnInNamespace) the browser is started there too, through a launcher
// script that runs it under `ip netns exec` (playwright talks to it over inherited pipes), and
// the page is served by playwright itself (a routed URL): no server of this process is
// reachable from inside.
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, BrowserContext } from "playwright-core";
import { spawnNamespace, withTimeout } from "./process.js";
import { chromiumPath } from "./tools.js";

// Loaded on first use only: most suites that import this module never start a browser.
const require = createRequire(import.meta.url);

export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--allow-loopback-in-peer-connection",
];

export interface CandidateInfo {
  candidateType: string;
  protocol: string;
  relayProtocol: string | null;
  address: string | null;
  port: number | null;
  url: string | null;
}

export interface SelectedPair {
  state: string;
  nominated: boolean | null;
  currentRoundTripTime: number | null;
  local: CandidateInfo | null;
  remote: CandidateInfo | null;
}

export interface WebRtcRelayResult {
  /** Distinct messages that came back over the data channel. */
  echoed: number;
  /** The offerer's selected (nominated, succeeded) candidate pair. */
  selectedPair: SelectedPair | null;
  /** The answerer's. */
  peerSelectedPair: SelectedPair | null;
  /** From createOffer to data channel open, and from open to the last echo. */
  connectMs: number | null;
  echoMs: number | null;
  candidates: { a: string[]; b: string[] };
  /** ICE state changes and candidate errors seen in the page. */
  log: string[];
  /** Wall time including browser launch. */
  totalMs: number;
}

export interface WebRtcRelayOptions {
  /** e.g. "turn:127.0.0.1:34780" or "turn:127.0.0.1:34780?transport=tcp" (port >= 1024). */
  turnUrl: string;
  username?: string;
  credential?: string;
  messages?: number;
  /** In-page bound for connecting + echoing (default 20 s); the whole run is bounded too. */
  timeoutMs?: number;
}

let pageHtml: string | undefined;

function servePage(): Promise<{ url: string; close: () => Promise<void> }> {
  pageHtml ??= readFileSync(new URL("../webrtc/relay-page.html", import.meta.url), "utf8");
  const html = pageHtml;
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(html);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}/`,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

/** A launcher that runs Chromium inside network namespace `ns`. */
function chromiumInNamespace(ns: string): string {
  const script = join(mkdtempSync(join(tmpdir(), "turnpike-chromium-")), "chromium");
  writeFileSync(script, `#!/bin/sh\nexec ip netns exec '${ns}' '${chromiumPath()}' "$@"\n`);
  chmodSync(script, 0o755);
  return script;
}

/** The relay page at a URL playwright answers itself (for a browser in a namespace). */
async function routePage(context: BrowserContext): Promise<string> {
  pageHtml ??= readFileSync(new URL("../webrtc/relay-page.html", import.meta.url), "utf8");
  const html = pageHtml;
  // http://127.0.0.1 is a secure context, as with the served page.
  const url = "http://127.0.0.1:1/";
  await context.route(url, (route) =>
    route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: html }),
  );
  return url;
}

export async function launchChromium(): Promise<Browser> {
  const { chromium } = require("playwright-core") as typeof import("playwright-core");
  const ns = spawnNamespace();
  return chromium.launch({
    executablePath: ns === undefined ? chromiumPath() : chromiumInNamespace(ns),
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

/** Launches Chromium, runs the two-peer relay test, closes everything (also on failure). */
export async function runWebRtcRelayTest(opts: WebRtcRelayOptions): Promise<WebRtcRelayResult> {
  const t0 = performance.now();
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const inNamespace = spawnNamespace() !== undefined;
  const page = inNamespace ? undefined : await servePage();
  let browser: Browser | undefined;
  try {
    browser = await launchChromium();
    const context = await browser.newContext();
    const url = page?.url ?? (await routePage(context));
    const tab = await context.newPage();
    await tab.goto(url, { timeout: 10_000 });
    const iceServers = [
      { urls: opts.turnUrl, username: opts.username, credential: opts.credential },
    ];
    const result = await withTimeout(
      tab.evaluate(
        (cfg) =>
          // Runs inside the page, where the global object is `window`.
          (
            globalThis as unknown as { runRelayTest: (c: unknown) => Promise<WebRtcRelayResult> }
          ).runRelayTest(cfg),
        { iceServers, messages: opts.messages ?? 20, timeoutMs },
      ),
      timeoutMs + 10_000,
      "WebRTC relay test did not finish",
    );
    return { ...result, totalMs: Math.round(performance.now() - t0) };
  } finally {
    await browser?.close().catch(() => undefined);
    await page?.close();
  }
}
