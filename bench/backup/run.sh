#!/usr/bin/env bash
# Backup benchmark, one command: builds the release `pgcmk`, starts a real `pgcmk
# vault serve` and `pgcmk serve` in a temporary directory, loads a pgbench database
# of the given scale into a pgcmk server and into a plain PostgreSQL cluster, and
# prints side by side: full backup and full restore through pgcmk and with
# pgBackRest by hand in the plain directory (same settings: zstd, aes-256-cbc, one
# process), wall time, throughput, CPU seconds per GB and the load average, in
# rounds that alternate their order; then the WAL archive's lag during pgbench -c4
# (sampled every 200 ms), pgbench TPC-B with archiving on against the same cluster
# without (alternating pairs), and a point-in-time restore.
# Options: --scale N (140: about 2.1 GB; 5 for a quick run), --rounds R (2),
# --pgbench-secs S (300), --tpcb-secs S (60), --tpcb-rounds R (3).
# bench/backup/read_path.sh isolates pgBackRest's read path through cryptfs.
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p pgcmk --bin pgcmk
export PGCMK_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/pgcmk"
exec cargo run --release --quiet -p pgcmk-control --example backup_bench -- "$@"
