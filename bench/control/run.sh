#!/usr/bin/env bash
# Control plane benchmark, one command: builds the release `pgcmk`, starts a real
# `pgcmk vault serve` and `pgcmk serve` (5 s key-check interval) in a temporary
# directory, and prints the median over 10 runs of server create time, revoke ->
# connections refused, re-grant -> Ready, and key rotation on 1 GB and 10 GB
# databases, and over 5 runs of recovery (kill -9 agent -> Ready, kill -9 postmaster
# -> Ready, full reboot -> Ready), next to the targets and the managed-service reference.
# Options: --runs N (10), --recovery-runs N (5), --interval S (5), --gb LIST (1,10).
# Run as root.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p pgcmk --bin pgcmk
export PGCMK_BIN="$PWD/target/release/pgcmk"
exec cargo run --release --quiet -p pgcmk-control --example control_bench -- "$@"
