#!/usr/bin/env bash
# Runs the whole vitest suite once per supported Node LTS line: the oldest (22) and the newest
# (26). Both binaries are devDependencies from the npm registry (tools/node-lines), nothing is
# downloaded here; TURNPIKE_NODE_LINE makes node_modules/.bin/node (and so vitest, its workers
# and every CLI a test starts through a pnpm shim) that line. Extra arguments go to vitest.
# Both runs always happen; the script fails if either failed.
#
# The log's last lines name what failed on each line (scripts/vitest-failures.mjs, from vitest's
# JSON report): a CI log is often read from its tail, and the first line's own failure summary
# is then a whole suite run above it.
set -uo pipefail
cd "$(dirname "$0")/.."

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
status=0
for line in 22 26; do
  version=$(TURNPIKE_NODE_LINE=$line node_modules/.bin/node --version)
  echo "=== vitest on Node ${version} (TURNPIKE_NODE_LINE=${line}) ==="
  start=$(date +%s)
  TURNPIKE_NODE_LINE=$line node_modules/.bin/vitest run --reporter=default --reporter=json \
    --outputFile.json="$reports/node-${line}.json" "$@" || status=1
  echo "=== Node ${version}: $(($(date +%s) - start)) s ==="
done
node_modules/.bin/node scripts/vitest-failures.mjs "$reports/node-22.json" "$reports/node-26.json"
exit $status
