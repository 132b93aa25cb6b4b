#!/usr/bin/env bash
# Runs the whole vitest suite once per supported Node LTS line: the oldest (22) and the newest
# (26). Both binaries are devDependencies from the npm registry (tools/node-lines), nothing is
# downloaded here; TURNPIKE_NODE_LINE makes node_modules/.bin/node (and so vitest, its workers
# and every CLI a test starts through a pnpm shim) that line. Extra arguments go to vitest.
# Both runs always happen; the script fails if either failed.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
for line in 22 26; do
  version=$(TURNPIKE_NODE_LINE=$line node_modules/.bin/node --version)
  echo "=== vitest on Node ${version} (TURNPIKE_NODE_LINE=${line}) ==="
  start=$(date +%s)
  TURNPIKE_NODE_LINE=$line node_modules/.bin/vitest run "$@" || status=1
  echo "=== Node ${version}: $(($(date +%s) - start)) s ==="
done
exit $status
