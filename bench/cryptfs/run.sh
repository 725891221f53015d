#!/usr/bin/env bash
# cryptfs benchmark: the same workloads on the plain disk, on cryptfs and on gocryptfs, side by
# side in one run, then one comparison table against the issue-3 targets.
#
#   bench/cryptfs/run.sh            full run: pgbench scale 30, 60 s per pgbench phase, 1 GiB file I/O
#   bench/cryptfs/run.sh --quick    smoke run: scale 10, 10 s phases, 256 MiB file I/O
#   env overrides: SCALE, DURATION (seconds), IO_MIB, RAND_OPS, BENCH_DIR, ONLY="plain cryptfs"
#
# Must run as root (mounts, drop_caches, runuser). Workloads per filesystem:
#   file I/O : iobench seq-write (1 MiB writes + fsync), seq-read cold (after drop_caches) and
#              warm, rand-read (8 KiB preads, cold), rand-write (8 KiB pwrites, fdatasync every 32)
#   pgbench  : -i -s SCALE; TPC-B -c4 -j2 -T DURATION; select-only -S -c4 -j2 -T DURATION
#              (page cache dropped before each phase; identical postgresql.conf everywhere)
# cryptfs runs as `pgcmk fs mount` (release build); its peak RSS (VmHWM) is read after pgbench.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
if ((QUICK)); then
  : "${SCALE:=10}" "${DURATION:=10}" "${IO_MIB:=256}" "${RAND_OPS:=5000}"
else
  : "${SCALE:=30}" "${DURATION:=60}" "${IO_MIB:=1024}" "${RAND_OPS:=20000}"
fi
: "${BENCH_DIR:=/var/tmp/pgcmk-bench}" "${ONLY:=plain cryptfs gocryptfs}"
PGBIN=/usr/lib/postgresql/15/bin

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
[[ $EUID -eq 0 ]] || die "run as root (mounts, drop_caches and runuser need it)"

# --- install and build -------------------------------------------------------------------------
need=()
for p in fuse3 gocryptfs postgresql-15 postgresql-contrib; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
log "building pgcmk and iobench (release)"
cargo build --release --quiet -p pgcmk
cargo build --release --quiet --manifest-path bench/cryptfs/iobench/Cargo.toml --target-dir target
PGCMK=$ROOT/target/release/pgcmk
IOBENCH=$ROOT/target/release/pgcmk-iobench

# --- state and cleanup (only what this script started) ----------------------------------------
declare -A R
DAEMON_PID=""
MNT=""
PGDATA_DIR=""
cleanup() {
  if [[ -n "$PGDATA_DIR" && -f "$PGDATA_DIR/postmaster.pid" ]]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" stop -m immediate -D "$PGDATA_DIR" >/dev/null 2>&1 || true
  fi
  if [[ -n "$MNT" ]] && mountpoint -q "$MNT"; then
    fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT" 2>/dev/null || true
  fi
  if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  PGDATA_DIR="" MNT="" DAEMON_PID=""
}
trap cleanup EXIT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

wait_mounted() { # mountpoint, pid of the daemon
  for _ in $(seq 1 500); do
    mountpoint -q "$1" && return 0
    kill -0 "$2" 2>/dev/null || die "filesystem daemon for $1 exited before mounting"
    sleep 0.02
  done
  die "$1 not mounted after 10 s"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- filesystems under test --------------------------------------------------------------------
# Each setup_* sets DIR (where the workloads write), and MNT/DAEMON_PID when something is mounted.
setup_plain() {
  DIR=$BENCH_DIR/plain
  mkdir -p "$DIR"
}

setup_cryptfs() {
  local base=$BENCH_DIR/cryptfs
  mkdir -p "$base/cipher" "$base/mnt"
  "$PGCMK" fs keygen --out "$base/key" >/dev/null
  "$PGCMK" fs init --cipher-dir "$base/cipher" --key-file "$base/key" >/dev/null
  MNT=$base/mnt
  "$PGCMK" fs mount --cipher-dir "$base/cipher" --mountpoint "$MNT" --key-file "$base/key" \
    --allow-other >"$base/daemon.log" 2>&1 &
  DAEMON_PID=$!
  wait_mounted "$MNT" "$DAEMON_PID"
  DIR=$MNT
}

setup_gocryptfs() {
  local base=$BENCH_DIR/gocryptfs
  mkdir -p "$base/cipher" "$base/mnt"
  head -c 32 /dev/urandom | base64 >"$base/pass"
  chmod 600 "$base/pass"
  # Plaintext names like cryptfs (its fastest setting: no name encryption on lookups).
  gocryptfs -init -q -plaintextnames -scryptn 10 -passfile "$base/pass" "$base/cipher"
  MNT=$base/mnt
  gocryptfs -fg -q -allow_other -passfile "$base/pass" "$base/cipher" "$MNT" \
    >"$base/daemon.log" 2>&1 &
  DAEMON_PID=$!
  wait_mounted "$MNT" "$DAEMON_PID"
  DIR=$MNT
}

teardown() {
  if [[ -n "$MNT" ]]; then
    if [[ "$1" == cryptfs ]]; then "$PGCMK" fs unmount "$MNT" >/dev/null; else fusermount3 -u "$MNT"; fi
    wait "$DAEMON_PID" || die "$1 daemon exited with an error (see $BENCH_DIR/$1/daemon.log)"
  fi
  DAEMON_PID="" MNT=""
}

# --- workloads ---------------------------------------------------------------------------------
kv() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

run_io() { # fs
  local f=$DIR/iobench.dat
  R[$1.seq_write]=$("$IOBENCH" seq-write "$f" "$IO_MIB" | kv seq_write_mb_s)
  drop_caches
  R[$1.seq_read]=$("$IOBENCH" seq-read "$f" | kv seq_read_mb_s)
  R[$1.seq_read_warm]=$("$IOBENCH" seq-read "$f" | kv seq_read_mb_s)
  drop_caches
  R[$1.rand_read]=$("$IOBENCH" rand-read "$f" "$RAND_OPS" | kv rand_read_iops)
  R[$1.rand_write]=$("$IOBENCH" rand-write "$f" "$RAND_OPS" | kv rand_write_iops)
  rm -f "$f"
}

pgbench_tps() { # args...
  "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres "$@" postgres 2>&1 | tee -a "$LOG" \
    | sed -n 's/^tps = \([0-9]*\)[0-9.]* (without initial connection time)/\1/p'
}

run_pgbench() { # fs
  PGDATA_DIR=$DIR/pgdata
  LOG=$BENCH_DIR/$1-pgbench.log
  mkdir -p "$PGDATA_DIR"
  chown postgres: "$PGDATA_DIR"
  PORT=$(free_port)
  runuser -u postgres -- "$PGBIN/initdb" -U postgres --auth=trust -E UTF8 --no-locale \
    -D "$PGDATA_DIR" >"$LOG" 2>&1
  cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
shared_buffers = '128MB'
max_wal_size = '4GB'
checkpoint_timeout = '30min'
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$BENCH_DIR/pglogs'
CONF
  runuser -u postgres -- "$PGBIN/pg_ctl" start -w -t 120 -D "$PGDATA_DIR" -l "$BENCH_DIR/pglogs/$1-server.log" >/dev/null
  log "$1: pgbench -i -s $SCALE"
  "$PGBIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >>"$LOG" 2>&1
  "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -X -q -c checkpoint postgres
  drop_caches
  log "$1: TPC-B -c4 -j2 -T $DURATION"
  R[$1.tpcb]=$(pgbench_tps -c4 -j2 -T "$DURATION")
  drop_caches
  log "$1: select-only -S -c4 -j2 -T $DURATION"
  R[$1.select]=$(pgbench_tps -S -c4 -j2 -T "$DURATION")
  [[ -n "${R[$1.tpcb]}" && -n "${R[$1.select]}" ]] || die "$1: pgbench printed no tps (see $LOG)"
  if [[ -n "$DAEMON_PID" ]]; then
    R[$1.rss]=$(awk '/^VmHWM/ {printf "%.0f", $2/1024}' "/proc/$DAEMON_PID/status")
  fi
  runuser -u postgres -- "$PGBIN/pg_ctl" stop -w -m fast -D "$PGDATA_DIR" >/dev/null
  PGDATA_DIR=""
}

# --- run ---------------------------------------------------------------------------------------
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/pglogs"
chmod 755 "$BENCH_DIR"
chown postgres: "$BENCH_DIR/pglogs" # server logs and unix socket, outside every mount
log "scale $SCALE, $DURATION s per pgbench phase, $IO_MIB MiB file I/O, $RAND_OPS random ops"
for fs in $ONLY; do
  log "== $fs"
  "setup_$fs"
  run_io "$fs"
  run_pgbench "$fs"
  teardown "$fs"
done

# --- table -------------------------------------------------------------------------------------
val() { echo "${R[$1]:-}"; }
ratio() { awk -v a="$1" -v b="$2" -v m="$3" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", m * a / b }'; }
verdict() { # value op threshold
  awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
    if (v == "-" || v == "") { print "n/a"; exit }
    ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0); print ok ? "met" : "MISSED" }'
}
row() { # label key unit
  printf "| %-32s | %10s | %10s | %10s | %9s | %9s |\n" "$1 ($3)" \
    "$(val plain.$2)" "$(val cryptfs.$2)" "$(val gocryptfs.$2)" \
    "$(ratio "$(val cryptfs.$2)" "$(val plain.$2)" 100)" "$(ratio "$(val cryptfs.$2)" "$(val gocryptfs.$2)" 1)"
}
{
  echo
  echo "pgbench scale $SCALE, -c4 -j2, $DURATION s per phase; file I/O on a $IO_MIB MiB file; $(nproc) cores; $(date -u +%F)"
  echo
  printf "| %-32s | %10s | %10s | %10s | %9s | %9s |\n" metric plain cryptfs gocryptfs "% plain" "×gocryptfs"
  echo "|----------------------------------|-----------:|-----------:|-----------:|----------:|----------:|"
  row "pgbench TPC-B" tpcb tps
  row "pgbench select-only" select tps
  row "seq write 1 MiB + fsync" seq_write MB/s
  row "seq read, cold cache" seq_read MB/s
  row "seq read, warm cache" seq_read_warm MB/s
  row "rand 8 KiB pread, cold" rand_read IOPS
  row "rand 8 KiB pwrite" rand_write IOPS
  row "daemon peak RSS (VmHWM)" rss MiB
  echo
  echo "| target | measured | verdict |"
  echo "|---|---:|---|"
  t=$(ratio "$(val cryptfs.tpcb)" "$(val plain.tpcb)" 100); echo "| TPC-B ≥ 90 % of plain | $t % | $(verdict "$t" ">=" 90) |"
  t=$(ratio "$(val cryptfs.select)" "$(val plain.select)" 100); echo "| select-only ≥ 95 % of plain | $t % | $(verdict "$t" ">=" 95) |"
  t=$(ratio "$(val cryptfs.tpcb)" "$(val gocryptfs.tpcb)" 1); echo "| TPC-B ≥ 2× gocryptfs | $t × | $(verdict "$t" ">=" 2) |"
  t=$(ratio "$(val cryptfs.select)" "$(val gocryptfs.select)" 1); echo "| select-only ≥ 2× gocryptfs | $t × | $(verdict "$t" ">=" 2) |"
  t=$(val cryptfs.seq_write); echo "| seq write ≥ 1000 MB/s | ${t:--} MB/s | $(verdict "${t:--}" ">=" 1000) |"
  t=$(val cryptfs.seq_read); echo "| seq read (cold) ≥ 1000 MB/s | ${t:--} MB/s | $(verdict "${t:--}" ">=" 1000) |"
  t=$(val cryptfs.rss); echo "| daemon RSS ≤ 128 MiB | ${t:--} MiB | $(verdict "${t:--}" "<=" 128) |"
} | tee "$BENCH_DIR/results.md"
