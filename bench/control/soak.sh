#!/usr/bin/env bash
# Control plane soak, one command: a real vault, control plane and 20 customer-managed
# servers for 30 minutes under rate-limited pgbench while keys are revoked, given back
# and rotated on a schedule; prints states, recovery times, commits and the RSS of every
# service once a minute, and checks at the end that every server is Ready and no
# acknowledged commit was lost. Options: --servers N, --minutes M, --tps T (per server).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p pgcmk
# The services, agents included, run release-built, as they would in production.
PGCMK_BIN="$PWD/target/release/pgcmk" exec cargo run --release --quiet -p pgcmk-control --example control_soak -- "$@"
