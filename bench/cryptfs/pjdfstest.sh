#!/usr/bin/env bash
# pjdfstest side by side: the backing ext4, gocryptfs and cryptfs, each mounted with
# the options PostgreSQL's volumes get (cryptfs: allow_other + defaults, through
# `examples/serve_volume.rs`; gocryptfs: -allow_other), run as root.
#
#   bench/cryptfs/pjdfstest.sh PJDFSTEST_DIR WORK_DIR [plain|gocryptfs|cryptfs ...]
#
# PJDFSTEST_DIR: a built pjdfstest outside this repository (github.com/pjd/pjdfstest:
# autoreconf -ifs && ./configure && make pjdfstest). Writes WORK_DIR/<fs>.log (prove's
# output) and prints failed assertions per test file and in total for each.
set -euo pipefail
suite=$(realpath "$1")
work=$(realpath -m "$2")
shift 2
kinds=("${@:-plain gocryptfs cryptfs}")
repo=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$work"

daemon=""
mounted=""
cleanup() {
    if [ -n "$mounted" ] && mountpoint -q "$mounted"; then
        umount "$mounted" 2>/dev/null || umount -l "$mounted" || true
    fi
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon"; wait "$daemon" || true
    fi
    daemon=""; mounted=""
}
trap cleanup EXIT

run_suite() { # $1: name, $2: directory to test in
    local log="$work/$1.log"
    mkdir -p "$2/t"
    chmod 0755 "$2" "$2/t"
    (cd "$2/t" && prove -r "$suite/tests" > "$log" 2>&1) || true
    python3 - "$log" "$1" <<'PY'
import re, sys
log, name = sys.argv[1], sys.argv[2]
text = open(log).read()
total = re.search(r"Files=(\d+), Tests=(\d+)", text)
failed = {}
for m in re.finditer(r"^(\S+\.t)\s+\(Wstat: \d+ Tests: (\d+) Failed: (\d+)\)", text, re.M):
    if int(m.group(3)):
        failed[m.group(1)] = int(m.group(3))
print(f"{name}: {sum(failed.values())} failed of {total.group(2) if total else '?'} assertions"
      f" in {len(failed)} of {total.group(1) if total else '?'} files")
for f, n in sorted(failed.items()):
    print(f"  {f.split('/tests/')[-1]}: {n}")
PY
}

for kind in ${kinds[@]}; do
    case "$kind" in
    plain)
        rm -rf "$work/plain"; mkdir -p "$work/plain"
        run_suite plain "$work/plain"
        ;;
    gocryptfs)
        rm -rf "$work/gocryptfs.cipher" "$work/gocryptfs.mnt"
        mkdir -p "$work/gocryptfs.cipher" "$work/gocryptfs.mnt"
        gocryptfs -q -init -extpass "echo pjdfstest" "$work/gocryptfs.cipher"
        gocryptfs -q -allow_other -extpass "echo pjdfstest" "$work/gocryptfs.cipher" "$work/gocryptfs.mnt"
        mounted="$work/gocryptfs.mnt"
        run_suite gocryptfs "$work/gocryptfs.mnt"
        cleanup
        ;;
    cryptfs)
        cargo build -q -p pgcmk-cryptfs --example serve_volume
        rm -rf "$work/cryptfs.cipher" "$work/cryptfs.mnt"; mkdir -p "$work/cryptfs.mnt"
        "$CARGO_TARGET_DIR/debug/examples/serve_volume" "$work/cryptfs.cipher" "$work/cryptfs.mnt" \
            > "$work/cryptfs.daemon.log" 2>&1 &
        daemon=$!; mounted="$work/cryptfs.mnt"
        for _ in $(seq 100); do mountpoint -q "$mounted" && break; sleep 0.1; done
        run_suite cryptfs "$work/cryptfs.mnt"
        cleanup
        ;;
    esac
done
