import { defineConfig } from "vitest/config";

// One project per package. Interop suites start real processes (coturn, Chromium,
// our own CLIs) on loopback, so they get generous timeouts and run one file at a time.
export default defineConfig({
  test: {
    // One test file at a time across all projects: the interop suites measure real processes
    // (coturn's uclient retransmits after a few hundred ms) on a 2-core machine, and a
    // property suite hogging the other core turns that into spurious timeouts.
    maxWorkers: 1,
    projects: [
      {
        // The layers and the sans-IO contract, checked on the sources (ARCHITECTURE.md).
        test: {
          name: "architecture",
          include: ["test/**/*.test.ts"],
        },
      },
      {
        // The tests' own helpers where a mistake would show up as other suites' flakes (ports).
        test: {
          name: "test-support",
          include: ["test-support/test/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "relay-core",
          include: ["packages/relay-core/test/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "udp-batch",
          include: ["packages/udp-batch/test/**/*.test.ts"],
          testTimeout: 60_000,
        },
      },
      {
        // The kernel data path against the real kernel, in network namespaces of its own (root;
        // skipped with the reason printed elsewhere, an error under CI).
        test: {
          name: "kernel-path",
          include: ["packages/kernel-path/test/**/*.test.ts"],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "runtime-kit",
          include: ["packages/runtime-kit/test/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "relay-server",
          include: ["packages/relay-server/test/**/*.test.ts"],
          // The batched UDP path explicitly (a relay that cannot load it fails to start), on two
          // worker threads.
          env: { TEST_UDP_IO: "batch", TEST_WORKERS: "2" },
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        // The same end-to-end suites against the node:dgram fallback path, on one engine.
        test: {
          name: "relay-server-dgram",
          include: [
            "packages/relay-server/test/e2e-*.test.ts",
            "packages/relay-server/test/interop-turnpike.test.ts",
          ],
          env: { TEST_UDP_IO: "dgram", TEST_WORKERS: "1" },
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "tunnel-client",
          include: ["packages/tunnel-client/test/**/*.test.ts"],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          // How Turnpike ships: Node lines, signal-safe starts, npm tarballs, the container
          // payload, Kubernetes manifests, the systemd unit and the Grafana dashboard.
          name: "deploy",
          include: ["deploy/test/**/*.test.ts"],
          testTimeout: 180_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "bench",
          include: ["bench/test/**/*.test.ts"],
          testTimeout: 180_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
