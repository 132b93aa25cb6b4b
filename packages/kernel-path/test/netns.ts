// The namespaces and agents of @turnpike/test-support/netns, with this suite's agent
// (fixtures/agent.mjs: UDP sockets, and the kernel path itself in the relay's namespace).
import { fileURLToPath } from "node:url";
import { NamespaceAgent } from "@turnpike/test-support/netns";

export * from "@turnpike/test-support/netns";

const AGENT = fileURLToPath(new URL("./fixtures/agent.mjs", import.meta.url));

export type Agent = NamespaceAgent;
export const Agent = {
  start: (ns: string, prefix: readonly string[] = []): Promise<Agent> =>
    NamespaceAgent.start(AGENT, ns, prefix),
};
