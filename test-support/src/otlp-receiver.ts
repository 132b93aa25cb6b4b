// A real OTLP gRPC metrics receiver for tests: a @grpc/grpc-js server implementing the
// collector's opentelemetry.proto.collector.metrics.v1.MetricsService/Export from the .proto
// files under test-support/proto (field numbers as upstream opentelemetry-proto). It records every
// ExportMetricsServiceRequest and offers a flattened view for assertions.
//
//   const receiver = await startOtlpReceiver();        // 127.0.0.1, free port
//   env.OTLP_GRPC_ENDPOINT = receiver.endpoint;         // "127.0.0.1:PORT"
//   ... export ...
//   const m = await receiver.waitForMetric("turn.relayed.packets");
//   await receiver.close();
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const PROTO_ROOT = fileURLToPath(new URL("../proto", import.meta.url));
const SERVICE_PROTO = "opentelemetry/proto/collector/metrics/v1/metrics_service.proto";

export type AttributeValue = string | number | boolean | null | AttributeValue[];
export type Attributes = Record<string, AttributeValue>;

export interface ReceivedPoint {
  attributes: Attributes;
  startTimeUnixNano: number;
  timeUnixNano: number;
  /** Sum and gauge points. */
  value?: number;
  /** Histogram points. */
  count?: number;
  sum?: number;
  bucketCounts?: number[];
  explicitBounds?: number[];
}

export interface ReceivedMetric {
  name: string;
  description: string;
  unit: string;
  kind: "sum" | "gauge" | "histogram" | "exponential_histogram" | "summary" | "unknown";
  isMonotonic?: boolean;
  temporality?: string;
  resource: Attributes;
  scope: { name: string; version: string };
  points: ReceivedPoint[];
  /** Index of the Export request this came from (later = newer). */
  request: number;
}

export interface OtlpReceiver {
  /** "127.0.0.1:PORT" (the Firezone OTLP_GRPC_ENDPOINT form). */
  readonly endpoint: string;
  /** "http://127.0.0.1:PORT" (the OTEL_EXPORTER_OTLP_ENDPOINT form). */
  readonly url: string;
  readonly port: number;
  /** Raw decoded requests, in arrival order. */
  readonly requests: unknown[];
  /** Every metric of every request, flattened. */
  metrics(): ReceivedMetric[];
  /** The newest received instance of a metric, if any. */
  latest(name: string): ReceivedMetric | undefined;
  /** Resolves with the newest instance of `name` that satisfies `predicate` (bounded wait). */
  waitForMetric(
    name: string,
    predicate?: (m: ReceivedMetric) => boolean,
    timeoutMs?: number,
  ): Promise<ReceivedMetric>;
  close(): Promise<void>;
}

interface RawKeyValue {
  key: string;
  value?: RawAnyValue | null;
}
interface RawAnyValue {
  value?: string;
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
  arrayValue?: { values?: RawAnyValue[] };
  kvlistValue?: { values?: RawKeyValue[] };
  bytesValue?: Buffer;
}

function anyValue(v: RawAnyValue | null | undefined): AttributeValue {
  if (v === null || v === undefined) return null;
  switch (v.value) {
    case "stringValue":
      return v.stringValue ?? "";
    case "boolValue":
      return v.boolValue ?? false;
    case "intValue":
      return Number(v.intValue);
    case "doubleValue":
      return v.doubleValue ?? 0;
    case "arrayValue":
      return (v.arrayValue?.values ?? []).map(anyValue);
    case "kvlistValue":
      return JSON.stringify(attributes(v.kvlistValue?.values));
    case "bytesValue":
      return v.bytesValue?.toString("hex") ?? "";
    default:
      return null;
  }
}

export function attributes(kvs: RawKeyValue[] | null | undefined): Attributes {
  const out: Attributes = {};
  for (const kv of kvs ?? []) out[kv.key] = anyValue(kv.value);
  return out;
}

// biome-ignore lint/suspicious/noExplicitAny: decoded protobuf objects are untyped
type Raw = any;

function flatten(request: Raw, index: number): ReceivedMetric[] {
  const out: ReceivedMetric[] = [];
  for (const rm of request.resourceMetrics ?? []) {
    const resource = attributes(rm.resource?.attributes);
    for (const sm of rm.scopeMetrics ?? []) {
      const scope = { name: sm.scope?.name ?? "", version: sm.scope?.version ?? "" };
      for (const m of sm.metrics ?? []) {
        const kind: ReceivedMetric["kind"] = m.data ?? "unknown";
        const body = m[m.data] ?? {};
        const points: ReceivedPoint[] = (body.dataPoints ?? []).map((p: Raw) => {
          const point: ReceivedPoint = {
            attributes: attributes(p.attributes),
            startTimeUnixNano: Number(p.startTimeUnixNano ?? 0),
            timeUnixNano: Number(p.timeUnixNano ?? 0),
          };
          if (kind === "histogram") {
            point.count = Number(p.count ?? 0);
            point.sum = p.sum === undefined || p.sum === null ? undefined : Number(p.sum);
            point.bucketCounts = (p.bucketCounts ?? []).map(Number);
            point.explicitBounds = (p.explicitBounds ?? []).map(Number);
          } else if (p.value === "asInt") {
            point.value = Number(p.asInt);
          } else if (p.value === "asDouble") {
            point.value = Number(p.asDouble);
          }
          return point;
        });
        out.push({
          name: m.name,
          description: m.description ?? "",
          unit: m.unit ?? "",
          kind,
          isMonotonic: kind === "sum" ? Boolean(body.isMonotonic) : undefined,
          temporality: body.aggregationTemporality,
          resource,
          scope,
          points,
          request: index,
        });
      }
    }
  }
  return out;
}

/**
 * Starts the receiver on `host`, at `port` (0: a free one; a given port lets an exporter that
 * already points there find a collector come up).
 */
export async function startOtlpReceiver(host = "127.0.0.1", at = 0): Promise<OtlpReceiver> {
  const definition = await protoLoader.load(SERVICE_PROTO, {
    includeDirs: [PROTO_ROOT],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as Raw;
  const service = loaded.opentelemetry.proto.collector.metrics.v1.MetricsService.service;

  const requests: unknown[] = [];
  const waiters = new Set<() => void>();
  const server = new grpc.Server();
  server.addService(service, {
    Export: (call: Raw, callback: Raw) => {
      requests.push(call.request);
      for (const wake of waiters) wake();
      callback(null, {});
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${at}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  });

  const metrics = (): ReceivedMetric[] => requests.flatMap((r, i) => flatten(r, i));
  const latest = (name: string): ReceivedMetric | undefined =>
    metrics()
      .filter((m) => m.name === name)
      .at(-1);

  return {
    endpoint: `${host}:${port}`,
    url: `http://${host}:${port}`,
    port,
    requests,
    metrics,
    latest,
    waitForMetric: (name, predicate = () => true, timeoutMs = 10_000) =>
      new Promise<ReceivedMetric>((resolve, reject) => {
        const check = (): boolean => {
          const found = metrics()
            .filter((m) => m.name === name && predicate(m))
            .at(-1);
          if (found === undefined) return false;
          clearTimeout(timer);
          waiters.delete(wake);
          resolve(found);
          return true;
        };
        const wake = (): void => {
          check();
        };
        const timer = setTimeout(() => {
          waiters.delete(wake);
          reject(
            new Error(
              `OTLP receiver: no "${name}" matching within ${timeoutMs} ms (${requests.length} requests received)`,
            ),
          );
        }, timeoutMs);
        waiters.add(wake);
        check();
      }),
    close: () =>
      new Promise<void>((resolve) => {
        // tryShutdown waits for in-flight calls; forceShutdown is the bounded fallback.
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      }),
  };
}
