#!/usr/bin/env bash
# Where the vault's CPU goes during one benchmark cell: runs bench/vault's load generator
# (release build) on one cell, records the vault process with `perf record` (cpu-clock
# samples with DWARF call stacks, 8 s, once the cell has started), and prints the share
# of each component (RSA, TLS, HTTP, tokio, thread hand-offs, audit commit, store reads,
# JSON, token check, tracing, metrics) by classify_profile.py, then by thread; and the
# context switches per request of each kind of thread over the same 8 s (every switch
# a thread makes to wait is a wake-up some other thread pays for later).
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
switches() { grep -H ctxt_switches /proc/"$vault"/task/*/status | while IFS=: read -r file kind n; do
  echo "$(cat "${file%/status}/comm") $kind $n"; done; }
switches > "$out/switches.before"
perf record -q -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$vault" -o "$out/perf.data" -- sleep 8
switches > "$out/switches.after"
wait "$bench"
grep "^| $op" "$out/bench.txt"
perf script -i "$out/perf.data" -F comm,ip,sym 2>/dev/null > "$out/stacks.txt"
python3 bench/vault/classify_profile.py "$out/stacks.txt"
ops=$(grep "^| $op" "$out/bench.txt" | head -1 | cut -d'|' -f5)
python3 - "$out/switches.before" "$out/switches.after" "$ops" <<'PY'
import collections, re, sys
def read(path):
    counts = collections.Counter()
    for line in open(path):
        comm, kind, n = line.split()
        counts[(re.sub(r"-?\d+$", "", comm), kind)] += int(n)
    return counts
before, after, rate = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
requests = rate * 8  # the cell's throughput over the 8 s recorded
print(f"context switches per request ({requests:.0f} requests in 8 s; voluntary = waits, nonvoluntary = preempted):")
for comm in sorted({c for c, _ in after}):
    v = after[(comm, "voluntary_ctxt_switches")] - before[(comm, "voluntary_ctxt_switches")]
    n = after[(comm, "nonvoluntary_ctxt_switches")] - before[(comm, "nonvoluntary_ctxt_switches")]
    print(f"  {comm:24s} voluntary {v / requests:5.2f}  nonvoluntary {n / requests:5.2f}")
PY
