#!/usr/bin/env bash
# Read replica lag, one command: builds the release `pgcmk`, starts a real `pgcmk
# vault serve` and `pgcmk serve` in a temporary directory, a service-managed source
# and a read replica of it (each on its own cryptfs volume, streaming over TLS),
# runs pgbench TPC-B -c4 on the source and samples the replica's replay lag every
# 100 ms (docs/replicas.md): p50/p99/max in seconds and WAL bytes, the source's TPS
# and the machine's CPU seconds per transaction. Target: p99 <= 1 s.
# Options: --scale N (10), --secs S (60). Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p pgcmk --bin pgcmk
export PGCMK_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/pgcmk"
exec cargo run --release --quiet -p pgcmk-control --example replica_lag -- "$@"
