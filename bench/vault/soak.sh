#!/usr/bin/env bash
# Vault soak, one command: builds the release `pgcmk` and the soak client, starts
# `pgcmk vault serve` in a temporary directory and runs N clients (default 64) for M
# minutes (default 30), printing per minute throughput, p99, errors, the vault's RSS,
# CPU and store size; restarts the vault halfway; verifies the audit chain at the end.
# Options: --minutes M, --clients N, --rate OPS_PER_SECOND (offered load; default
# unthrottled).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --release --quiet -p pgcmk-keyprovider --example vault_soak -- "$@"
