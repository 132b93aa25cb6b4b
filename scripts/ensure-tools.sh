#!/usr/bin/env bash
# Make sure the external tools the interop suites and the bench drive are installed:
#   coturn          turnserver, turnutils_uclient, turnutils_peer, turnutils_stunclient
#   chromium        /usr/bin/chromium (driven by playwright-core; never a downloaded browser)
#   iperf3          bench baseline
#   openssh-server  sshd (bench: reverse-SSH-tunnel comparison)
#   systemd         systemd-analyze (verifies deploy/systemd/turnpike-relay.service)
#   postgresql      initdb, postgres and psql (the tunnel's end-to-end database test; Debian keeps
#                   the server binaries in /usr/lib/postgresql/<major>/bin, off PATH)
#   clang           compiles the kernel data path's BPF program (packages/kernel-path)
#   libbpf-dev      libbpf's headers, which the program and its loader addon build against
#   bpftool         the kernel-path suite checks `bpftool net show` in its namespaces
#   ethtool         the kernel-path suite turns checksum offload off on its veths
#   libcap2-bin     capsh: the kernel-path suite drops capabilities
#   python3         the kernel-path suite sends an IPv4 datagram with options (IP_OPTIONS)
#   nftables        nft: the conntrack suite loads a stateful rule and the notrack recipe
#                   (deploy/nftables) in its own namespaces
#   golang-go       builds pion's TURN client for the interop suites (test-support/pion), offline
#   golang-github-pion-turn.v2-dev  pion/turn v2 and its dependencies under /usr/share/gocode
# Installs whatever is missing with apt-get when running as root (or through passwordless sudo).
# Prints one line when everything is already there. When it cannot install: under CI=true it
# exits non-zero (interop suites must not silently skip in CI); otherwise it warns and exits 0,
# and the suites that need a missing tool skip with the reason printed.
set -euo pipefail

# package -> a file that proves it is installed
declare -A probe=(
  [coturn]="turnserver turnutils_uclient turnutils_peer turnutils_stunclient"
  [chromium]="/usr/bin/chromium"
  [iperf3]="iperf3"
  [openssh-server]="sshd"
  [systemd]="systemd-analyze"
  [postgresql]="pg:initdb pg:postgres pg:psql"
  [clang]="clang"
  [libbpf-dev]="file:/usr/include/bpf/libbpf.h"
  [bpftool]="bpftool"
  [ethtool]="ethtool"
  [libcap2-bin]="capsh"
  [python3]="python3"
  [nftables]="nft"
  [golang-go]="go"
  [golang-github-pion-turn.v2-dev]="file:/usr/share/gocode/src/github.com/pion/turn/v2/client.go"
)

packages=(coturn chromium iperf3 openssh-server systemd postgresql clang libbpf-dev bpftool ethtool libcap2-bin python3 nftables golang-go golang-github-pion-turn.v2-dev)

have() {
  case "$1" in
    pg:*) compgen -G "/usr/lib/postgresql/*/bin/${1#pg:}" >/dev/null ;;
    file:*) [ -f "${1#file:}" ] ;;
    /*) [ -x "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
  esac
}

missing_pkgs() {
  local pkg bin
  for pkg in "${packages[@]}"; do
    for bin in ${probe[$pkg]}; do
      if ! have "$bin"; then echo "$pkg"; break; fi
    done
  done
}

mapfile -t missing < <(missing_pkgs)
if [ "${#missing[@]}" -eq 0 ]; then
  echo "ensure-tools: ok (${packages[*]})"
  exit 0
fi

fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "ensure-tools: ERROR: $*" >&2
    exit 1
  fi
  echo "ensure-tools: WARNING: $* (interop suites needing them will be skipped)" >&2
  exit 0
}

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  fail "missing ${missing[*]}; not root and no passwordless sudo, install with: apt-get install -y ${missing[*]}"
fi
command -v apt-get >/dev/null 2>&1 || fail "missing ${missing[*]} and apt-get is not available"

echo "ensure-tools: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
# Installing coturn, openssh-server, systemd or postgresql must not start system daemons (a
# turnserver on 0.0.0.0:3478, sshd on :22, a cluster on :5432): a policy-rc.d that denies service
# starts, removed afterwards if we created it. The suites start their own instances on loopback.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT

log=$(mktemp /tmp/ensure-tools.XXXXXX.log)
if ! { "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  rm -f "$log"
  fail "apt-get install ${missing[*]} failed (log tail above)"
fi
rm -f "$log"

mapfile -t still < <(missing_pkgs)
[ "${#still[@]}" -eq 0 ] || fail "still missing after install: ${still[*]}"
echo "ensure-tools: installed ${missing[*]}"
