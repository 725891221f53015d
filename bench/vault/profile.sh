#!/usr/bin/env bash
# Where the vault's CPU goes during one benchmark cell: runs bench/vault's load generator
# (release build) on one cell, records the vault process with `perf record` (cpu-clock
# samples with DWARF call stacks, 8 s, once the cell has started), and prints the share
# of each component (RSA, TLS, HTTP, tokio, thread hand-offs, audit commit, store reads,
# JSON, token check, tracing, metrics) by classify_profile.py.
# Usage: bench/vault/profile.sh [--op unwrapkey] [--size 2048] [--clients 64]
# Needs perf (linux-perf); PGCMK_BIN picks the vault binary (default: the release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
op=unwrapkey size=2048 clients=64
while [ $# -gt 0 ]; do
  case "$1" in
    --op) op=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) echo "usage: $0 [--op OP] [--size BITS] [--clients N]" >&2; exit 2 ;;
  esac
done
# Two builds, as run.sh and the load generator do: one invocation for both would unify
# their features and rebuild most of the workspace.
cargo build --release --quiet -p pgcmk --bin pgcmk
cargo build --release --quiet -p pgcmk-keyprovider --example vault_bench
export PGCMK_BIN=${PGCMK_BIN:-$PWD/target/release/pgcmk}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
target/release/examples/vault_bench --keys 0 --seconds 14 --rounds 1 --ops "$op" \
  --sizes "$size" --clients "$clients" > "$out/bench.txt" 2>&1 &
bench=$!
vault=""
for _ in $(seq 1 120); do
  vault=$(pgrep -P "$bench" -f "vault serve" || true)
  [ -n "$vault" ] && grep -q "$op RSA-$size x$clients" "$out/bench.txt" && break
  sleep 0.5
done
[ -n "$vault" ] || { echo "the vault did not start" >&2; wait "$bench"; exit 1; }
sleep 2
perf record -q -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$vault" -o "$out/perf.data" -- sleep 8
wait "$bench"
grep "^| $op" "$out/bench.txt"
perf script -i "$out/perf.data" -F comm,ip,sym 2>/dev/null > "$out/stacks.txt"
python3 bench/vault/classify_profile.py "$out/stacks.txt"
