// deploy/kubernetes, checked offline: each kustomization (base and overlays) is rendered the
// way kustomize does for the fields these files use (resources, namespace, JSON 6902 patches,
// images; any other field fails the test rather than being ignored), every object is validated
// against the Kubernetes API schema with kubernetes-models, and the relay settings in the
// manifests are checked against what turnpike-relay accepts (its --help lists every flag and env
// var). The README's Kubernetes runbook is read too: kubectl alone, from the repository root,
// on kustomization directories that exist.
import { execFile } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { TURNPIKE_BIN } from "@turnpike/test-support/turnpike";
import { beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments, parse as parseYaml } from "yaml";
import { commandLines, markdownSection, repoText, shellBlocks } from "./docs.js";
import { REPO } from "./launch.js";

const run = promisify(execFile);
const K8S = join(REPO, "deploy/kubernetes");

// biome-ignore lint/suspicious/noExplicitAny: manifests are untyped JSON until validated
type Obj = Record<string, any>;

const KUSTOMIZATION_FIELDS = new Set([
  "apiVersion",
  "kind",
  "namespace",
  "resources",
  "patches",
  "images",
]);

/** The kustomization file of `dir`, parsed. */
function kustomization(dir: string): Obj {
  return parseYaml(readFileSync(join(dir, "kustomization.yaml"), "utf8")) as Obj;
}

/** Renders the kustomization in `dir` (see the header for the supported fields). */
function render(dir: string, k: Obj = kustomization(dir)): Obj[] {
  for (const field of Object.keys(k)) {
    if (!KUSTOMIZATION_FIELDS.has(field)) {
      throw new Error(`${dir}/kustomization.yaml: field ${field} is not rendered by this test`);
    }
  }
  expect(k.kind).toBe("Kustomization");
  const objects: Obj[] = [];
  for (const entry of (k.resources ?? []) as string[]) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) objects.push(...render(path));
    else {
      for (const doc of parseAllDocuments(readFileSync(path, "utf8"))) {
        if (doc.errors.length > 0) throw new Error(`${path}: ${doc.errors[0]?.message}`);
        const o = doc.toJS() as Obj | null;
        if (o !== null) objects.push(o);
      }
    }
  }
  for (const p of (k.patches ?? []) as Obj[]) {
    const targets = objects.filter(
      (o) => o.kind === p.target?.kind && o.metadata?.name === p.target?.name,
    );
    expect(targets.length, `patch target ${JSON.stringify(p.target)} in ${dir}`).toBe(1);
    for (const op of parseYaml(p.patch) as Obj[]) applyJsonPatch(targets[0]!, op);
  }
  for (const image of (k.images ?? []) as Obj[]) setImage(objects, image);
  if (k.namespace !== undefined) for (const o of objects) o.metadata.namespace = k.namespace;
  return objects;
}

/** kustomize's images transformer: containers whose image is `name` (any tag) get the new one. */
function setImage(objects: Obj[], image: Obj): void {
  for (const o of objects) {
    const pod = o.spec?.template?.spec;
    for (const c of [...(pod?.initContainers ?? []), ...(pod?.containers ?? [])] as Obj[]) {
      const [name, tag] = String(c.image).split(/:(?=[^/]*$)/);
      if (name !== image.name) continue;
      c.image = `${image.newName ?? name}:${image.newTag ?? tag}`;
    }
  }
}

/** One RFC 6902 operation (add, replace, remove) on `doc`, in place. */
function applyJsonPatch(doc: Obj, op: Obj): void {
  const path = (op.path as string)
    .split("/")
    .slice(1)
    .map((s) => s.replaceAll("~1", "/").replaceAll("~0", "~"));
  const last = path.pop()!;
  let parent: Obj = doc;
  for (const key of path) {
    parent = parent[key];
    if (parent === undefined) throw new Error(`patch path ${op.path} does not exist`);
  }
  if (Array.isArray(parent)) {
    const i = last === "-" ? parent.length : Number(last);
    if (op.op === "add") parent.splice(i, 0, op.value);
    else if (op.op === "replace") parent[i] = op.value;
    else if (op.op === "remove") parent.splice(i, 1);
    else throw new Error(`unsupported patch op ${op.op}`);
  } else if (op.op === "add" || op.op === "replace") parent[last] = op.value;
  else if (op.op === "remove") delete parent[last];
  else throw new Error(`unsupported patch op ${op.op}`);
}

async function validate(o: Obj): Promise<void> {
  const mod = (await import(`kubernetes-models/${o.apiVersion}/${o.kind}`)) as Record<
    string,
    new (
      data: Obj,
    ) => { validate(): void }
  >;
  const Model = mod[o.kind];
  if (Model === undefined) throw new Error(`no model for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
}

const find = (objects: Obj[], kind: string): Obj => {
  const o = objects.find((x) => x.kind === kind);
  if (o === undefined) throw new Error(`no ${kind}`);
  return o;
};
const relayContainer = (ds: Obj): Obj => ds.spec.template.spec.containers[0];
const envValue = (c: Obj, name: string): Obj | undefined =>
  (c.env as Obj[]).find((e) => e.name === name);

let help: string;
beforeAll(async () => {
  // One line: yargs wraps "[env: NAME]" across lines.
  help = (await run(process.execPath, [TURNPIKE_BIN, "--help"])).stdout.replace(/\s+/g, " ");
});

describe("deploy/kubernetes/base", () => {
  const objects = render(join(K8S, "base"));
  const ds = find(objects, "DaemonSet");
  const relay = relayContainer(ds);

  it("is valid against the Kubernetes API schemas", async () => {
    expect(objects.map((o) => o.kind).sort()).toEqual(["DaemonSet", "PodDisruptionBudget"]);
    for (const o of objects) await validate(o);
  });

  it("runs one relay per node on the host network, bound to the node's address", () => {
    const pod = ds.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    expect(pod.dnsPolicy).toBe("ClusterFirstWithHostNet");
    expect(envValue(relay, "NODE_IP")?.valueFrom?.fieldRef?.fieldPath).toBe("status.hostIP");
    expect(envValue(relay, "TURNPIKE_RELAY_IP")?.value).toBe("$(NODE_IP)");
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(relay.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(relay.resources.requests.cpu).toBeDefined();
    expect(relay.resources.requests.memory).toBeDefined();
  });

  it("takes the token from a Secret, never from a literal", () => {
    const token = envValue(relay, "TURNPIKE_TOKEN");
    expect(token?.value).toBeUndefined();
    expect(token?.valueFrom?.secretKeyRef).toEqual({ name: "turnpike-relay", key: "token" });
    expect(JSON.stringify(relay.args ?? [])).not.toContain("--token");
  });

  it("probes /readyz and /healthz on the port the relay's health listener binds", () => {
    const healthPort = Number(envValue(relay, "TURNPIKE_HEALTH_LISTEN")?.value.split(":").at(-1));
    const named = (name: string) =>
      (relay.ports as Obj[]).find((p) => p.name === name)?.containerPort;
    expect(relay.readinessProbe.httpGet.path).toBe("/readyz");
    expect(relay.livenessProbe.httpGet.path).toBe("/healthz");
    expect(named(relay.readinessProbe.httpGet.port)).toBe(healthPort);
    expect(named(relay.livenessProbe.httpGet.port)).toBe(healthPort);
    const annotations = ds.spec.template.metadata.annotations;
    const promPort = envValue(relay, "TURNPIKE_PROMETHEUS_LISTEN")?.value.split(":").at(-1);
    expect(annotations["prometheus.io/port"]).toBe(promPort);
  });

  it("gives SIGTERM more time than the drain (plus the relay's 10 s shutdown guard)", () => {
    const drain = Number(envValue(relay, "TURNPIKE_DRAIN_TIMEOUT")?.value ?? 30);
    expect(ds.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(drain + 10);
    expect(ds.spec.updateStrategy.rollingUpdate.maxUnavailable).toBe(1);
  });

  it("budgets disruptions of the relay pods", () => {
    const pdb = find(objects, "PodDisruptionBudget");
    expect(pdb.spec.selector.matchLabels).toEqual(ds.spec.template.metadata.labels);
    expect(pdb.spec.maxUnavailable).toBe(1);
  });
});

describe("deploy/kubernetes/overlays/fleet", () => {
  const objects = render(join(K8S, "overlays/fleet"));
  const ds = find(objects, "DaemonSet");

  it("is valid against the Kubernetes API schemas", async () => {
    for (const o of objects) await validate(o);
  });

  it("puts the relays on labelled nodes behind one headless, DNS-published Service", () => {
    expect(ds.spec.template.spec.nodeSelector).toEqual({ "turnpike.example.com/relay": "true" });
    const svc = find(objects, "Service");
    expect(svc.spec.clusterIP).toBe("None");
    expect(svc.spec.selector).toEqual(ds.spec.selector.matchLabels);
    expect(svc.metadata.annotations["external-dns.alpha.kubernetes.io/hostname"]).toBeDefined();
    expect(svc.metadata.namespace).toBe(ds.metadata.namespace);
  });
});

describe("deploy/kubernetes/overlays/kernel-path", () => {
  const objects = render(join(K8S, "overlays/kernel-path"));
  const ds = find(objects, "DaemonSet");
  const relay = relayContainer(ds);

  it("is valid against the Kubernetes API schemas", async () => {
    for (const o of objects) await validate(o);
  });

  it("gives the relay CAP_BPF and CAP_NET_ADMIN and nothing else, as root (no ambient capabilities)", () => {
    expect(relay.securityContext.capabilities).toEqual({
      drop: ["ALL"],
      add: ["BPF", "NET_ADMIN"],
    });
    expect(ds.spec.template.spec.securityContext.runAsUser).toBe(0);
    expect(ds.spec.template.spec.securityContext.runAsNonRoot).toBe(false);
    expect(relay.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(relay.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(envValue(relay, "TURNPIKE_KERNEL_PATH")?.value).toBe("tc");
  });

  it("leaves the base as it was: non-root, no capability, the kernel path on auto", () => {
    const base = relayContainer(find(render(join(K8S, "base")), "DaemonSet"));
    expect(base.securityContext.capabilities).toEqual({ drop: ["ALL"] });
    expect(envValue(base, "TURNPIKE_KERNEL_PATH")).toBeUndefined();
  });
});

describe("relay settings in the manifests", () => {
  const rendered = ["base", "overlays/fleet", "overlays/kernel-path"].map((dir) =>
    render(join(K8S, dir)),
  );

  it("name only flags and TURNPIKE_* variables that turnpike-relay --help lists", () => {
    for (const objects of rendered) {
      const relay = relayContainer(find(objects, "DaemonSet"));
      const defined = new Set<string>();
      for (const e of relay.env as Obj[]) {
        if (e.name.startsWith("TURNPIKE_")) expect(help, e.name).toContain(`env: ${e.name}]`);
        // $(VAR) expands only variables defined earlier in the list.
        for (const ref of String(e.value ?? "").matchAll(/\$\((\w+)\)/g)) {
          expect(defined.has(ref[1]!), `${e.name} uses $(${ref[1]})`).toBe(true);
        }
        defined.add(e.name);
      }
      for (const arg of (relay.args ?? []) as string[]) {
        if (arg.startsWith("--")) expect(help, arg).toMatch(new RegExp(`\\s${arg}\\s`));
      }
    }
  });
});

describe("the README's Kubernetes runbook", () => {
  const section = markdownSection(repoText("README.md"), "Runbook: Kubernetes");
  const lines = commandLines(shellBlocks(section).flat());

  it("runs kubectl alone, from the repository root (no cd, no standalone kustomize)", () => {
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(line).toMatch(/^kubectl /);
  });

  it("names only kustomization directories that exist, and they render valid objects", async () => {
    // Every path under deploy/kubernetes the runbook and the kustomization headers mention,
    // commands and comments alike.
    const texts = [section, repoText("deploy/kubernetes/base/kustomization.yaml")];
    const paths = new Set(
      texts.flatMap((t) => [...t.matchAll(/\bdeploy\/kubernetes\/[\w./-]*\w/g)].map((m) => m[0])),
    );
    expect([...paths]).toEqual(
      expect.arrayContaining(["deploy/kubernetes/base", "deploy/kubernetes/overlays/fleet"]),
    );
    const applied = lines.flatMap((l) =>
      [...l.matchAll(/(?:\s-k|\bkustomize)\s+(\S+)/g)].map((m) => m[1]!),
    );
    expect(applied).toContain("deploy/kubernetes/base");
    for (const path of [...paths, ...applied]) {
      if (path.endsWith(".yaml")) {
        expect(existsSync(join(REPO, path)), path).toBe(true);
        continue;
      }
      expect(existsSync(join(REPO, path, "kustomization.yaml")), path).toBe(true);
      for (const o of render(join(REPO, path))) await validate(o);
    }
  });

  it("sets the image in the base's images entry, which the overlays inherit", () => {
    const base = kustomization(join(K8S, "base"));
    const raw = parseYaml(readFileSync(join(K8S, "base/daemonset.yaml"), "utf8")) as Obj;
    const [entry] = base.images as Obj[];
    expect(relayContainer(raw).image.split(":")[0]).toBe(entry!.name);
    const pushed = {
      ...base,
      images: [{ ...entry, newName: "registry.example.com/turnpike-relay" }],
    };
    const image = relayContainer(find(render(join(K8S, "base"), pushed), "DaemonSet")).image;
    expect(image).toBe(`registry.example.com/turnpike-relay:${entry!.newTag}`);
    const fleet = find(render(join(K8S, "overlays/fleet")), "DaemonSet");
    expect(relayContainer(fleet).image).toBe(
      relayContainer(find(render(join(K8S, "base")), "DaemonSet")).image,
    );
  });
});
