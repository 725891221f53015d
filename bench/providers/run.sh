#!/usr/bin/env bash
# Key providers side by side, one command: unwrap latency and throughput through the
# KeyEncryptionKey trait at 1 and 4 callers for the Azure-compatible vault (release
# `pgcmk vault serve`, RSA-3072, software and RSA-HSM in the vault's SoftHSM2 token),
# a SoftHSM2 token (RSA-3072) and a PyKMIP server
# (AES-256-GCM), with server and client CPU per unwrap; then the key work of a
# server create per provider. Options: --seconds S per cell (default 5).
# Needs scripts/setup (softhsm2, PyKMIP in .venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --release --quiet -p pgcmk-keyprovider --example provider_bench -- "$@"
