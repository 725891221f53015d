#!/usr/bin/env bash
# High-availability benchmark, one command: builds the release `pgcmk`, starts a real
# `pgcmk vault serve` and `pgcmk serve` (with its 3-member etcd cluster) in a temporary
# directory, creates a highly available server (two nodes under Patroni, each on its
# own cryptfs volume and DEK) and prints: failovers (the primary node down -> the
# first write the new primary acknowledged, median of N), lost acknowledged commits,
# how returning primaries rejoined (pg_rewind or a new clone), and pgbench TPC-B on
# the server next to the same Patroni setup on plain directories (the same settings,
# synchronous mode and TLS), side by side and alternated, with CPU seconds per 1,000
# transactions.
# Options: --failovers N (10; 0: the TPC-B rows only), --scale S (10), --tpcb-secs T
# (60), --quick (3 failovers, scale 2, 15 s).
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p pgcmk --bin pgcmk
export PGCMK_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/pgcmk"
exec cargo run --release --quiet -p pgcmk-control --example ha_bench -- "$@"
