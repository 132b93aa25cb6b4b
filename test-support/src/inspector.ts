// What a Node process holds, as opposed to what its RSS shows. RSS mixes live state with
// garbage V8 has not collected yet and with pages V8 and malloc keep after a collection, so
// it steps up and down by tens of MB between identical runs. To tell "holds nothing once the
// attackers have gone" apart from "has not collected yet", a test starts the process with
// `--inspect=127.0.0.1:0`, connects to its inspector (the Chrome DevTools protocol over a
// WebSocket, the same one `node inspect` uses), forces a full garbage collection in every
// isolate (the main thread and each worker thread, through the NodeWorker domain), and reads
// what survived. Nothing in the process under test knows it is being measured.

import { withTimeout } from "./process.js";

/** What survived a full garbage collection in one isolate (bytes). */
export interface IsolateHeap {
  /** "main" or the worker's title. */
  isolate: string;
  /** V8 heap in use: JS objects. */
  heapUsed: number;
  /** Memory of C++ objects bound to JS objects, including ArrayBuffers (Buffers). */
  external: number;
}

interface Pending {
  resolve(result: unknown): void;
  reject(error: Error): void;
}

/** The inspector's WebSocket address as Node prints it on stderr. */
export function inspectorUrl(stderr: string): string | undefined {
  return /Debugger listening on (ws:\/\/\S+)/.exec(stderr)?.[1];
}

/** One DevTools protocol session, with the worker threads' sessions reached through it. */
export class InspectorSession {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Per worker session id: its own pending calls. */
  private readonly workers = new Map<string, { title: string; pending: Map<number, Pending> }>();

  private constructor(private readonly ws: WebSocket) {
    ws.addEventListener("message", (event) => this.onMessage(String(event.data)));
    ws.addEventListener("close", () => this.failAll(new Error("inspector closed")));
  }

  static async connect(url: string, timeoutMs = 5000): Promise<InspectorSession> {
    const ws = new WebSocket(url);
    const opened = new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve());
      ws.addEventListener("error", () => reject(new Error(`inspector ${url}: connection failed`)));
    });
    await withTimeout(opened, timeoutMs, `inspector ${url}: no connection`);
    const session = new InspectorSession(ws);
    // Attach to the worker threads there are (and later ones); they keep running.
    await session.call("NodeWorker.enable", { waitForDebuggerOnStart: false });
    return session;
  }

  /** Full GC in every isolate, then what each holds. */
  async heapAfterGc(): Promise<IsolateHeap[]> {
    const out = [await this.measure("main", (m, p) => this.call(m, p))];
    for (const [sessionId, w] of this.workers) {
      out.push(await this.measure(w.title, (m, p) => this.callWorker(sessionId, m, p)));
    }
    return out;
  }

  close(): void {
    this.ws.close();
  }

  private async measure(
    isolate: string,
    call: (method: string, params?: object) => Promise<unknown>,
  ): Promise<IsolateHeap> {
    await call("HeapProfiler.collectGarbage");
    const r = (await call("Runtime.evaluate", {
      expression: "(({heapUsed, external}) => ({heapUsed, external}))(process.memoryUsage())",
      returnByValue: true,
    })) as { result: { value: { heapUsed: number; external: number } } };
    return { isolate, ...r.result.value };
  }

  private call(method: string, params: object = {}, timeoutMs = 10_000): Promise<unknown> {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, method, params }));
    return this.await(this.pending, id, method, timeoutMs);
  }

  private async callWorker(
    sessionId: string,
    method: string,
    params: object = {},
  ): Promise<unknown> {
    const w = this.workers.get(sessionId);
    if (!w) throw new Error(`worker session ${sessionId} is gone`);
    const id = this.nextId++;
    // Waiting before sending: the worker's answer may come before the send is acknowledged.
    // Both awaited together, so a failed send leaves no reply rejecting unobserved later.
    // (The worker's session is enabled by its first message; Runtime needs no enable call.)
    const [reply] = await Promise.all([
      this.await(w.pending, id, method, 10_000),
      this.call("NodeWorker.sendMessageToWorker", {
        sessionId,
        message: JSON.stringify({ id, method, params }),
      }),
    ]);
    return reply;
  }

  private await(
    pending: Map<number, Pending>,
    id: number,
    method: string,
    timeoutMs: number,
  ): Promise<unknown> {
    const reply = new Promise<unknown>((resolve, reject) => pending.set(id, { resolve, reject }));
    return withTimeout(reply, timeoutMs, `inspector: ${method} got no answer`).finally(() =>
      pending.delete(id),
    );
  }

  private onMessage(text: string): void {
    const msg = JSON.parse(text) as {
      id?: number;
      method?: string;
      params?: Record<string, unknown>;
      result?: unknown;
      error?: { message: string };
    };
    if (msg.id !== undefined) {
      settle(this.pending, msg);
    } else if (msg.method === "NodeWorker.attachedToWorker") {
      const p = msg.params as { sessionId: string; workerInfo: { title: string } };
      this.workers.set(p.sessionId, { title: p.workerInfo.title, pending: new Map() });
    } else if (msg.method === "NodeWorker.detachedFromWorker") {
      const p = msg.params as { sessionId: string };
      const w = this.workers.get(p.sessionId);
      this.workers.delete(p.sessionId);
      for (const x of w?.pending.values() ?? []) x.reject(new Error("worker detached"));
    } else if (msg.method === "NodeWorker.receivedMessageFromWorker") {
      const p = msg.params as { sessionId: string; message: string };
      const inner = JSON.parse(p.message) as {
        id?: number;
        result?: unknown;
        error?: { message: string };
      };
      const w = this.workers.get(p.sessionId);
      if (w && inner.id !== undefined) settle(w.pending, inner);
    }
  }

  private failAll(error: Error): void {
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    for (const w of this.workers.values()) for (const p of w.pending.values()) p.reject(error);
  }
}

function settle(
  pending: Map<number, Pending>,
  msg: { id?: number; result?: unknown; error?: { message: string } },
): void {
  const p = pending.get(msg.id!);
  if (!p) return;
  pending.delete(msg.id!);
  if (msg.error) p.reject(new Error(msg.error.message));
  else p.resolve(msg.result);
}
