#!/usr/bin/env bash
# Cost of extending a file on cryptfs: time and bytes the backing filesystem allocates
# (stat %b x 512) for truncate up by 1 GiB, a 1-byte write 1 GiB past the end, and
# fallocate of 256 MiB with and without KEEP_SIZE. Run as root.
#
#   bench/cryptfs/extend.sh WORK_DIR                  this tree (release build of
#                                                     examples/serve_volume.rs)
#   PGCMK=/path/to/pgcmk bench/cryptfs/extend.sh WORK_DIR
#                                                     another build's `pgcmk fs mount`
#                                                     (e.g. main's, for the before row)
#   SERVE_VOLUME=target/debug/examples/serve_volume bench/cryptfs/extend.sh WORK_DIR
#                                                     another build of the example
set -euo pipefail
work=$(realpath -m "$1")
repo=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
rm -rf "$work"; mkdir -p "$work/mnt"
daemon=""
cleanup() {
    if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon"; wait "$daemon" || true
    fi
    mountpoint -q "$work/mnt" && umount -l "$work/mnt" || true
}
trap cleanup EXIT
if [ -n "${PGCMK:-}" ]; then
    "$PGCMK" fs keygen --out "$work/key" > /dev/null
    "$PGCMK" fs init --cipher-dir "$work/cipher" --key-file "$work/key" > /dev/null
    "$PGCMK" fs mount --cipher-dir "$work/cipher" --mountpoint "$work/mnt" \
        --key-file "$work/key" --allow-other > "$work/daemon.log" 2>&1 &
else
    if [ -z "${SERVE_VOLUME:-}" ]; then
        cargo build -q --release -p pgcmk-cryptfs --example serve_volume
        SERVE_VOLUME=$CARGO_TARGET_DIR/release/examples/serve_volume
    fi
    "$SERVE_VOLUME" "$work/cipher" "$work/mnt" > "$work/daemon.log" 2>&1 &
fi
daemon=$!
for _ in $(seq 100); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
mountpoint -q "$work/mnt"

row() { # $1: label, $2: file name, rest: command run in the mount
    local label=$1 name=$2; shift 2
    printf 'x' > "$work/mnt/$name"; sync
    local start end
    start=$(date +%s.%N)
    (cd "$work/mnt" && "$@")
    sync
    end=$(date +%s.%N)
    local blocks size
    blocks=$(stat -c %b "$work/cipher/$name")
    size=$(stat -c %s "$work/mnt/$name")
    printf '%-40s %8.2f s  %14d bytes allocated  (size %d)\n' "$label" \
        "$(echo "$end - $start" | bc)" $((blocks * 512)) "$size"
    rm "$work/mnt/$name"; sync
}
row "truncate -s +1G" t truncate -s +1G t
row "1-byte write 1 GiB past the end" w dd if=/dev/zero of=w bs=1 count=1 seek=1G conv=notrunc status=none
row "fallocate -l 256M (mode 0)" f fallocate -l 256M f
row "fallocate -n -l 256M (KEEP_SIZE)" k fallocate -n -l 256M k
