#!/usr/bin/env bash
# FUSE over io_uring vs /dev/fuse: the fuse-uring spike (crates/fuse-uring, a passthrough of a
# backing directory, no encryption) served over each transport with the same request handlers
# and the same thread count, plus the backing directory itself (plain) as the reference.
#
#   bench/cryptfs/uring.sh
#   env overrides: ROUNDS (3), SEQ_MIB (512), RAND_OPS (20000), WAL_OPS (5000),
#                  BACKING_DIR (/dev/shm/pgcmk-uring-bench: tmpfs, so that the disk does not hide
#                  the transport's cost; give a directory on a disk to include it)
#
# Rounds alternate the order of the three columns; the table has the median of ROUNDS. Every row
# uses O_DIRECT (spike-io), which the spike answers with FOPEN_DIRECT_IO, so every call reaches the
# daemon: sequential 1 MiB pwrites + fsync and 1 MiB preads (MB/s, and CPU-seconds per GiB of the
# daemon plus the caller), random 8 KiB preads and pwrites (one caller, then two at once: the ring
# has a queue per CPU, /dev/fuse one shared queue), and 8 KiB pwrite + fdatasync (the WAL flush),
# each with ops/s and p50/p99 latency.
# Must run as root (mount(2)). Sets /sys/module/fuse/parameters/enable_uring to Y for the run and
# puts back the value it found at exit (it only offers io_uring to mounts that ask for it in INIT).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${ROUNDS:=3}" "${SEQ_MIB:=512}" "${RAND_OPS:=20000}" "${WAL_OPS:=5000}"
: "${BACKING_DIR:=/dev/shm/pgcmk-uring-bench}"
PARAM=/sys/module/fuse/parameters/enable_uring

die() { echo "uring.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
[[ $EUID -eq 0 ]] || die "run as root (mount(2) and $PARAM need it)"
[[ -f $PARAM ]] || die "$PARAM is missing: this kernel has no FUSE over io_uring (Linux 6.14+, CONFIG_FUSE_IO_URING)"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet -p pgcmk-fuse-uring --bins
BIN="$CARGO_TARGET_DIR/release"

WORK="$BACKING_DIR"
MNT="$WORK/mnt"
DATA="$WORK/backing"
RESULTS="$WORK/results.tsv"
PARAM_BEFORE=$(cat "$PARAM")
DAEMON=""
cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && { umount "$MNT" 2>/dev/null || umount -l "$MNT"; }
  [[ -n $DAEMON ]] && kill "$DAEMON" 2>/dev/null || true
  echo "$PARAM_BEFORE" >"$PARAM"
  rm -rf "$DATA" "$MNT"
}
trap cleanup EXIT
echo Y >"$PARAM"
mkdir -p "$WORK"
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# Starts the spike over a transport and sets DAEMON and DIR; checks that the transport it
# announced is the one asked for.
start() {
  local transport=$1 expect=$2
  "$BIN/spikefs" "$DATA" "$MNT" --transport "$transport" >"$WORK/spikefs.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 100); do grep -qs mounted "$WORK/spikefs.log" && break; sleep 0.05; done
  grep -q "$expect" "$WORK/spikefs.log" || die "spikefs did not mount over $expect: $(cat "$WORK/spikefs.log")"
  DIR=$MNT
}

stop() {
  umount "$MNT"
  wait "$DAEMON" || die "spikefs exited with an error: $(cat "$WORK/spikefs.log")"
  DAEMON=""
}

# One column's rows; appends "column key value" lines.
rows() {
  local column=$1 pid=${2:-}
  {
    "$BIN/spike-io" seq-write "$DIR/data" "$SEQ_MIB" $pid
    "$BIN/spike-io" seq-read "$DIR/data" $pid
    "$BIN/spike-io" rand-read "$DIR/data" "$RAND_OPS"
    "$BIN/spike-io" rand-write "$DIR/data" "$RAND_OPS"
    "$BIN/spike-io" rand-read "$DIR/data" "$RAND_OPS" 2
    "$BIN/spike-io" rand-write "$DIR/data" "$RAND_OPS" 2
    "$BIN/spike-io" wal-flush "$DIR/wal" "$WAL_OPS"
  } | tr ' ' '\n' | awk -F= -v c="$column" 'NF == 2 { print c "\t" $1 "\t" $2 }' >>"$RESULTS"
}

COLUMNS=(io_uring devfuse plain)
for ((round = 0; round < ROUNDS; round++)); do
  for ((i = 0; i < 3; i++)); do
    column=${COLUMNS[$(((i + round) % 3))]}
    rm -rf "$DATA" && mkdir -p "$DATA" "$MNT"
    : >"$DATA/data"
    head -c $((16 << 20)) /dev/zero >"$DATA/wal"
    # Settle the backing filesystem (the previous column's deleted files, the new ones) so that
    # no column's syncs pay for another's leftovers.
    sync -f "$DATA"
    log "round $((round + 1))/$ROUNDS: $column"
    case $column in
      plain) DIR=$DATA; rows plain ;;
      io_uring) start auto "transport: io_uring"; rows io_uring "$DAEMON"; stop ;;
      devfuse) start devfuse "transport: /dev/fuse"; rows devfuse "$DAEMON"; stop ;;
    esac
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RESULTS" "ROUNDS=$ROUNDS SEQ_MIB=$SEQ_MIB RAND_OPS=$RAND_OPS WAL_OPS=$WAL_OPS, backing $BACKING_DIR ($(stat -f -c %T "$WORK")), $(nproc) cores, kernel $(uname -r), load average $LOAD_BEFORE before, $LOAD_AFTER after, $(git rev-parse --short HEAD), $(date -u +%F)" <<'PY'
import statistics
import sys

samples = {}
for line in open(sys.argv[1]):
    column, key, value = line.rstrip("\n").split("\t")
    samples.setdefault((column, key), []).append(float(value))
ROWS = [  # key, label, higher is better
    ("seq_write_mb_s", "seq write 1 MiB + fsync, MB/s", True),
    ("seq_write_cpu_s_per_gib", "seq write, CPU-s per GiB (daemon + caller)", False),
    ("seq_read_mb_s", "seq read 1 MiB, MB/s", True),
    ("seq_read_cpu_s_per_gib", "seq read, CPU-s per GiB (daemon + caller)", False),
]
for key, label in [("rand_read", "random 8 KiB pread"), ("rand_write", "random 8 KiB pwrite"),
                   ("rand_read_2jobs", "random 8 KiB pread, 2 callers"),
                   ("rand_write_2jobs", "random 8 KiB pwrite, 2 callers"),
                   ("wal_flush", "8 KiB pwrite + fdatasync (WAL flush)")]:
    ROWS += [(f"{key}_ops_s", f"{label}, ops/s", True),
             (f"{key}_p50_us", f"{label}, p50 µs", False),
             (f"{key}_p99_us", f"{label}, p99 µs", False)]

def median(column, key):
    values = samples.get((column, key))
    return statistics.median(values) if values else None

def fmt(v):
    return "—" if v is None else (f"{v:.0f}" if v >= 100 else f"{v:.2f}" if v < 10 else f"{v:.1f}")

print("| row | plain | /dev/fuse | io_uring | io_uring vs /dev/fuse |")
print("|---|---:|---:|---:|---:|")
for key, label, higher in ROWS:
    plain, dev, ring = (median(c, key) for c in ("plain", "devfuse", "io_uring"))
    if dev and ring:
        better = ring > dev if higher else ring < dev
        verdict = f"{ring / dev:.2f}× ({'better' if better else 'worse'})"
    else:
        verdict = "—"
    print(f"| {label} | {fmt(plain)} | {fmt(dev)} | {fmt(ring)} | {verdict} |")
print()
print(f"Median of the rounds; {sys.argv[2]}.")
PY
