#!/usr/bin/env bash
# Key vault benchmark, one command: builds the release `pgcmk` and the load generator,
# starts `pgcmk vault serve` in a temporary directory, and prints wrapkey/unwrapkey/sign
# throughput, latency (beside Little's law) and CPU per operation at 1/8/64 clients for
# RSA 2048/3072/4096 next to the bare RSA-OAEP-256 decrypt of aws-lc-rs (the vault's own
# library) on all cores; every cell is the median of --rounds (default 3), each round
# starting with the bare rate and (for unwrapkey) the p99/mean of a FIFO queue of bare
# decrypts with the most clients (the tail the machine alone gives a fair server). Then
# the vault's RSS while holding many keys.
# Options: --seconds S per cell (default 3), --rounds R, --keys N to hold for the RSS part
# (default 10000; 0 skips it), --skip-load to measure only the RSS part; --ops, --sizes and
# --clients take comma-separated lists to run only some cells (e.g. --ops unwrapkey
# --sizes 2048 --clients 64 for a quick A/B).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --release --quiet -p pgcmk-keyprovider --example vault_bench -- "$@"
