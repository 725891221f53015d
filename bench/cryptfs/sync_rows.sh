#!/usr/bin/env bash
# The rows whose cost is syncs, alone and with more rounds than bench/cryptfs/run.sh: a new
# 16 MiB WAL segment (256 KiB zero writes with direct I/O, fsync), then 8 KiB write +
# fdatasync three times per page (`pgcmk-iobench wal-flush`), and drops: files of 8 KiB
# each opened, truncated to 0 and closed (`pgcmk-iobench drops`, what a DROP does to every
# fork). On the plain directory, cryptfs (this tree) and cryptfs-b (another build),
# round-robin, the two builds taking turns going first. Every round mounts each cryptfs
# afresh, so its first segment is the first write through a new mount (the daemon's
# one-time costs) and its second a warm one. Prints every sample and the median per row,
# with the daemon's CPU per wal-flush run (segment and flushes).
#
#   bench/cryptfs/sync_rows.sh                ROUNDS=5, DROPS=500,
#                                             BENCH_DIR=/var/tmp/pgcmk-sync-bench
#   CRYPTFS_B_BIN=/path/to/pgcmk bench/cryptfs/sync_rows.sh
#   BACKING=tmpfs bench/cryptfs/sync_rows.sh  backing files on a tmpfs (CPU, no disk)
#   RT=1 ...                                  daemons and iobench SCHED_FIFO (chrt -f 50)
# Run as root. Builds pgcmk and iobench (release) unless PGCMK and IOBENCH are given.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${ROUNDS:=5}" "${DROPS:=500}" "${BENCH_DIR:=/var/tmp/pgcmk-sync-bench}" "${BACKING:=disk}" "${RT:=0}"
[[ $EUID -eq 0 ]] || { echo "sync_rows.sh: run as root (mounts)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [[ -z ${PGCMK:-} || -z ${IOBENCH:-} ]]; then
  cargo build --release --quiet -p pgcmk -p pgcmk-iobench
fi
PGCMK=${PGCMK:-$TARGET/release/pgcmk}
IOBENCH=${IOBENCH:-$TARGET/release/pgcmk-iobench}
PGCMK_B=${CRYPTFS_B_BIN:-$PGCMK}
PRIO=()
((RT)) && PRIO=(chrt -f 50)
HZ=$(getconf CLK_TCK)

mkdir -p "$BENCH_DIR"
TMPFS=0 DAEMON="" MNT=""
cleanup() {
  if [[ -n $MNT ]] && mountpoint -q "$MNT"; then "$PGCMK" fs unmount "$MNT" >/dev/null 2>&1 || umount -l "$MNT" || true; fi
  if [[ -n $DAEMON ]] && kill -0 "$DAEMON" 2>/dev/null; then kill "$DAEMON"; wait "$DAEMON" || true; fi
  if ((TMPFS)); then umount "$BENCH_DIR" || true; fi
}
trap cleanup EXIT
if [[ $BACKING == tmpfs ]]; then
  mount -t tmpfs -o size=2G tmpfs "$BENCH_DIR"
  TMPFS=1
fi

ticks() { local f; read -r -a f <<<"$(sed 's/.*) //' "/proc/$1/stat")"; echo $((f[11] + f[12])); }
declare -A S
sample() { S[$1]="${S[$1]:-}${S[$1]:+ }$2"; }
kv() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

wal_run() { # column label dir [daemon pid]
  local col=$1 label=$2 dir=$3 pid=${4:-} t0=0 t1=0 out
  mkdir -p "$dir/pg_wal"
  [[ -n $pid ]] && t0=$(ticks "$pid")
  out=$("${PRIO[@]}" "$IOBENCH" wal-flush "$dir/pg_wal/seg")
  [[ -n $pid ]] && t1=$(ticks "$pid")
  rm -f "$dir/pg_wal/seg"
  sample "$col.$label.segment_ms" "$(kv wal_segment_ms <<<"$out")"
  sample "$col.$label.flush_us" "$(kv wal_flush_us <<<"$out")"
  # Daemon CPU over the whole run (segment and flushes), ms.
  sample "$col.$label.daemon_cpu_ms" "$(((t1 - t0) * 1000 / HZ))"
}

drops_run() { # column dir
  sample "$1.drop_us" "$("${PRIO[@]}" "$IOBENCH" drops "$2" "$DROPS" | kv drop_us)"
}

cryptfs_round() { # column binary
  local col=$1 bin=$2 base=$BENCH_DIR/$1
  rm -rf "$base"; mkdir -p "$base/mnt"
  "$bin" fs keygen --out "$base/key" >/dev/null
  "$bin" fs init --cipher-dir "$base/cipher" --key-file "$base/key" >/dev/null
  "${PRIO[@]}" "$bin" fs mount --cipher-dir "$base/cipher" --mountpoint "$base/mnt" \
    --key-file "$base/key" --allow-other >"$base/daemon.log" 2>&1 &
  DAEMON=$! MNT=$base/mnt
  for _ in $(seq 500); do mountpoint -q "$MNT" && break; sleep 0.02; done
  mountpoint -q "$MNT" || { echo "sync_rows.sh: $col did not mount (see $base/daemon.log)" >&2; exit 1; }
  wal_run "$col" first "$MNT" "$DAEMON"
  wal_run "$col" warm "$MNT" "$DAEMON"
  drops_run "$col" "$MNT"
  "$PGCMK" fs unmount "$MNT" >/dev/null
  wait "$DAEMON"
  DAEMON="" MNT=""
}

for round in $(seq "$ROUNDS"); do
  echo "[$(date -u +%H:%M:%S)] round $round/$ROUNDS, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  mkdir -p "$BENCH_DIR/plain"
  wal_run plain warm "$BENCH_DIR/plain"
  drops_run plain "$BENCH_DIR/plain"
  # The two builds take turns going first.
  if ((round % 2)); then
    cryptfs_round cryptfs "$PGCMK"
    cryptfs_round cryptfs-b "$PGCMK_B"
  else
    cryptfs_round cryptfs-b "$PGCMK_B"
    cryptfs_round cryptfs "$PGCMK"
  fi
done

median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '%-40s %10s   %s\n' row median samples
for key in $(printf '%s\n' "${!S[@]}" | sort); do
  printf '%-40s %10s   %s\n' "$key" "$(median <<<"${S[$key]}")" "${S[$key]}"
done
