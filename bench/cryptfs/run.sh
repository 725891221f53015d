#!/usr/bin/env bash
# cryptfs benchmark: the same workloads on the plain disk, on cryptfs and on gocryptfs, side by
# side in one run, then one comparison table against the issue-3 targets.
#
#   bench/cryptfs/run.sh            full run: pgbench scale 30, 3 rounds x 60 s per phase, 1 GiB I/O
#   bench/cryptfs/run.sh --quick    smoke run: scale 10, 1 round x 10 s, 256 MiB file I/O
#   env overrides: SCALE, DURATION (s per pgbench run), ROUNDS, WARMUP (s of unmeasured TPC-B
#                  per cluster before the rounds; default DURATION), IO_MIB, RAND_OPS, FILES,
#                  BENCH_DIR, IO_ONLY=1 (the file I/O rows only: no pgbench, no regression suite),
#                  REGRESS_ROUNDS (core regression suite runs per cluster; default ROUNDS, 0: none),
#                  ONLY="plain cryptfs gocryptfs" (columns, in this order; add cryptfs-b for an A/B),
#                  CRYPTFS_FLAGS="--threads 1" (extra `pgcmk fs mount` flags for the cryptfs column),
#                  CRYPTFS_B_FLAGS="--direct-io-wal=false", CRYPTFS_B_BIN=/path/to/other/pgcmk
#                  (the cryptfs-b column: same as cryptfs unless these change its flags or build),
#                  WAL_SYNC_METHOD (every cluster's wal_sync_method; default open_datasync, what
#                  pgcmk's node agent runs PostgreSQL with),
#                  BACKING=tmpfs (every filesystem's files on a tmpfs mounted at BENCH_DIR for the
#                  run: the file I/O rows without a disk to hide CPU cost; implies IO_ONLY=1),
#                  RT=1 (the FUSE daemons and iobench run SCHED_FIFO, `chrt -f 50`: on a machine
#                  shared with CPU-bound builds the file I/O rows then measure the filesystems,
#                  not the scheduler; a measuring device, not how pgcmk runs)
#
# Must run as root (mounts, drop_caches, runuser). All filesystems are mounted at once and every
# measurement is taken round-robin across them, ROUNDS times, reporting the median: load from
# other processes on the machine then hits every filesystem alike.
#   file I/O : iobench seq-write (1 MiB writes + fsync), seq-read cold (after drop_caches) and
#              warm (each with its CPU seconds per GiB: the caller's plus the FUSE daemon's), rand-read (8 KiB preads, cold), rand-write (8 KiB pwrites, fdatasync every 32),
#              wal-flush (in a pg_wal directory: a new 16 MiB segment, then 8 KiB write + fdatasync
#              3 times per page, as commits fill WAL pages), files (FILES files of 100 B created in
#              100 new directories, then removed, nothing fsynced: seconds per phase, CPU seconds
#              of the caller and the FUSE daemon)
#   pgbench  : -i -s SCALE; TPC-B -c4 -j2 -T WARMUP, not measured (the first updates after a load
#              pay one-time costs: on cryptfs, the first rewrite of each block allocates its
#              slot-B page); then TPC-B -c4 -j2 -T DURATION and select-only -S -c4 -j2 -T DURATION
#              (identical postgresql.conf everywhere; page cache warm from the load)
#   regression: PostgreSQL's core regression suite (parallel_schedule, up to 20 tests at once: many
#              backends creating, filling, truncating and dropping small files, with fsyncs and
#              DDL), by pg_regress from scripts/setup-pg-regress, after the pgbench phases: wall
#              time, CPU seconds (the postmaster and every backend, plus the FUSE daemon) and
#              failed tests (worst round)
# cryptfs runs as `pgcmk fs mount` (release build from CARGO_TARGET_DIR or target/) with its
# defaults (request threads = CPUs within 2-4, direct I/O for pg_wal); its peak RSS (VmHWM) is read
# at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
if ((QUICK)); then
  : "${SCALE:=10}" "${DURATION:=10}" "${ROUNDS:=1}" "${IO_MIB:=256}" "${RAND_OPS:=5000}" "${FILES:=10000}"
else
  : "${SCALE:=30}" "${DURATION:=60}" "${ROUNDS:=3}" "${IO_MIB:=1024}" "${RAND_OPS:=20000}" "${FILES:=50000}"
fi
: "${IO_ONLY:=0}" "${BACKING:=disk}" "${RT:=0}"
PRIO=()
((RT)) && PRIO=(chrt -f 50)
[[ $BACKING =~ ^(disk|tmpfs)$ ]] || { echo "bench: BACKING is disk or tmpfs, not '$BACKING'" >&2; exit 1; }
[[ $BACKING == tmpfs ]] && IO_ONLY=1
if ((IO_ONLY)); then REGRESS_ROUNDS=0; fi
: "${WARMUP:=$DURATION}" "${BENCH_DIR:=/var/tmp/pgcmk-bench}" "${ONLY:=plain cryptfs gocryptfs}"
: "${REGRESS_ROUNDS:=$ROUNDS}"
: "${WAL_SYNC_METHOD:=open_datasync}"
PGBIN=/usr/lib/postgresql/15/bin
PG_REGRESS=/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress # from postgresql-client-15

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
[[ $EUID -eq 0 ]] || die "run as root (mounts, drop_caches and runuser need it)"
[[ $WAL_SYNC_METHOD =~ ^(fdatasync|fsync|open_datasync|open_sync)$ ]] ||
  die "unknown WAL_SYNC_METHOD '$WAL_SYNC_METHOD' (fdatasync fsync open_datasync open_sync)"
for fs in $ONLY; do
  [[ $fs =~ ^(plain|cryptfs|cryptfs-b|gocryptfs)$ ]] ||
    die "unknown filesystem '$fs' in ONLY (plain cryptfs cryptfs-b gocryptfs)"
done

# --- install and build -------------------------------------------------------------------------
need=()
for p in fuse3 gocryptfs postgresql-15 postgresql-contrib gcc dpkg-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/setup-pg-regress
REGRESS=/var/cache/pgcmk/postgresql-15-regress/source/src/test/regress
log "building pgcmk and iobench (release)"
cargo build --release --quiet -p pgcmk -p pgcmk-iobench
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PGCMK=$TARGET/release/pgcmk
PGCMK_B=${CRYPTFS_B_BIN:-$PGCMK}
[[ -x $PGCMK_B ]] || die "CRYPTFS_B_BIN=$PGCMK_B is not an executable"
IOBENCH_BIN=$TARGET/release/pgcmk-iobench
iobench() { "${PRIO[@]}" "$IOBENCH_BIN" "$@"; }

# --- state and cleanup (only what this script started) ----------------------------------------
declare -A R DIR MNT PID PORT # results; per filesystem: work dir, mountpoint, daemon pid, pg port
TMPFS_MOUNTED=0
cleanup() {
  for fs in $ONLY; do
    local data=${DIR[$fs]:-}/pgdata
    if [[ -n "${DIR[$fs]:-}" && -f "$data/postmaster.pid" ]]; then
      runuser -u postgres -- "$PGBIN/pg_ctl" stop -m immediate -D "$data" >/dev/null 2>&1 || true
    fi
    if [[ -n "${MNT[$fs]:-}" ]] && mountpoint -q "${MNT[$fs]}"; then
      fusermount3 -u "${MNT[$fs]}" 2>/dev/null || umount "${MNT[$fs]}" 2>/dev/null || true
    fi
    if [[ -n "${PID[$fs]:-}" ]] && kill -0 "${PID[$fs]}" 2>/dev/null; then
      kill "${PID[$fs]}" 2>/dev/null || true
      wait "${PID[$fs]}" 2>/dev/null || true
    fi
  done
  if ((TMPFS_MOUNTED)); then umount "$BENCH_DIR" || true; fi
}
trap cleanup EXIT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

wait_mounted() { # fs
  for _ in $(seq 1 500); do
    mountpoint -q "${MNT[$1]}" && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || die "$1 daemon exited before mounting (see $BENCH_DIR/$1/daemon.log)"
    sleep 0.02
  done
  die "${MNT[$1]} not mounted after 10 s"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- filesystems under test --------------------------------------------------------------------
setup() { # fs: sets DIR (where workloads write) and, for FUSE filesystems, MNT and PID
  local fs=$1 base=$BENCH_DIR/$1
  mkdir -p "$base"
  case $fs in
    plain)
      DIR[$fs]=$base
      return
      ;;
    cryptfs*)
      local flags=() bin=$PGCMK
      if [[ $fs == cryptfs-b ]]; then
        bin=$PGCMK_B
        read -r -a flags <<<"${CRYPTFS_B_FLAGS:-}"
      else
        read -r -a flags <<<"${CRYPTFS_FLAGS:-}"
      fi
      "$bin" fs keygen --out "$base/key" >/dev/null
      "$bin" fs init --cipher-dir "$base/cipher" --key-file "$base/key" >/dev/null
      mkdir -p "$base/mnt"
      "${PRIO[@]}" "$bin" fs mount --cipher-dir "$base/cipher" --mountpoint "$base/mnt" --key-file "$base/key" \
        --allow-other "${flags[@]}" >"$base/daemon.log" 2>&1 &
      ;;
    gocryptfs)
      mkdir -p "$base/cipher" "$base/mnt"
      head -c 32 /dev/urandom | base64 >"$base/pass"
      chmod 600 "$base/pass"
      # Plaintext names like cryptfs (gocryptfs's fastest setting: no name crypto on lookups).
      gocryptfs -init -q -plaintextnames -scryptn 10 -passfile "$base/pass" "$base/cipher"
      "${PRIO[@]}" gocryptfs -fg -q -allow_other -passfile "$base/pass" "$base/cipher" "$base/mnt" \
        >"$base/daemon.log" 2>&1 &
      ;;
  esac
  PID[$fs]=$!
  MNT[$fs]=$base/mnt
  DIR[$fs]=$base/mnt
  wait_mounted "$fs"
}

teardown() { # fs
  local fs=$1 data=${DIR[$1]}/pgdata
  # A server that crashed may still be replaying WAL, which a fast shutdown waits for, or may
  # have shut down for good when its recovery failed.
  if [[ -f $data/postmaster.pid ]] &&
    ! runuser -u postgres -- "$PGBIN/pg_ctl" stop -w -t 300 -m fast -D "$data" >/dev/null; then
    log "$fs: no fast shutdown within 300 s (see $BENCH_DIR/pglogs/$fs-server.log); immediate shutdown"
    runuser -u postgres -- "$PGBIN/pg_ctl" stop -w -m immediate -D "$data" >/dev/null
  fi
  [[ -n "${MNT[$fs]:-}" ]] || return 0
  if [[ $fs == cryptfs* ]]; then "$PGCMK" fs unmount "${MNT[$fs]}" >/dev/null; else fusermount3 -u "${MNT[$fs]}"; fi
  wait "${PID[$fs]}" || die "$fs daemon exited with an error (see $BENCH_DIR/$fs/daemon.log)"
  MNT[$fs]="" PID[$fs]=""
}

# --- workloads ---------------------------------------------------------------------------------
kv() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# Appends one sample; the table reports the median of each key's samples.
sample() { R[$1]="${R[$1]:-}${R[$1]:+ }$2"; }

daemon_ticks() { # fs: the FUSE daemon's CPU ticks so far (0 for plain)
  if [[ -n "${PID[$1]:-}" ]]; then cpu_ticks "${PID[$1]}"; else echo 0; fi
}

timed_io() { # fs key value cpu_key gib iobench-args...: samples iobench's `value` as `key`,
  # and the CPU seconds per GiB of the caller (its caller_cpu_s) and the FUSE daemon as `cpu_key`
  local fs=$1 key=$2 value=$3 cpu_key=$4 gib=$5 d0 d1 out
  shift 5
  d0=$(daemon_ticks "$fs")
  out=$(iobench "$@")
  d1=$(daemon_ticks "$fs")
  sample "$fs.$key" "$(kv "$value" <<<"$out")"
  sample "$fs.$cpu_key" "$(awk -v c="$(kv caller_cpu_s <<<"$out")" -v t="$((d1 - d0))" \
    -v hz="$(getconf CLK_TCK)" -v gib="$gib" 'BEGIN { printf "%.3f", (c + t / hz) / gib }')"
}

io_round() { # fs
  local fs=$1 f=${DIR[$1]}/iobench.dat wal gib
  gib=$(awk -v m="$IO_MIB" 'BEGIN { print m / 1024 }')
  timed_io "$fs" seq_write seq_write_mb_s seq_write_cpu "$gib" seq-write "$f" "$IO_MIB"
  drop_caches
  timed_io "$fs" seq_read seq_read_mb_s seq_read_cpu "$gib" seq-read "$f"
  timed_io "$fs" seq_read_warm seq_read_mb_s seq_read_warm_cpu "$gib" seq-read "$f"
  drop_caches
  sample "$fs.rand_read" "$(iobench rand-read "$f" "$RAND_OPS" | kv rand_read_iops)"
  sample "$fs.rand_write" "$(iobench rand-write "$f" "$RAND_OPS" | kv rand_write_iops)"
  rm -f "$f"
  mkdir -p "${DIR[$fs]}/pg_wal"
  wal=$(iobench wal-flush "${DIR[$fs]}/pg_wal/iobench-wal")
  sample "$fs.wal_segment" "$(kv wal_segment_ms <<<"$wal")"
  sample "$fs.wal_flush" "$(kv wal_flush_us <<<"$wal")"
  rm -rf "${DIR[$fs]}/pg_wal"
  files_round "$fs"
}

files_round() { # fs: the files row; CPU of the caller (printed by iobench) plus the daemon's
  local fs=$1 out d0=0 d1=0
  [[ -n "${PID[$fs]:-}" ]] && d0=$(cpu_ticks "${PID[$fs]}")
  out=$(iobench files "${DIR[$fs]}" "$FILES" 100)
  [[ -n "${PID[$fs]:-}" ]] && d1=$(cpu_ticks "${PID[$fs]}")
  sample "$fs.files_create" "$(kv files_create_s <<<"$out")"
  sample "$fs.files_remove" "$(kv files_remove_s <<<"$out")"
  sample "$fs.files_cpu" "$(awk -v c="$(kv files_caller_cpu_s <<<"$out")" -v t="$((d1 - d0))" \
    -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", c + t / hz }')"
}

pg_init() { # fs: a cluster on the filesystem, started and loaded with pgbench -i
  local fs=$1 data=${DIR[$1]}/pgdata
  PORT[$fs]=$(free_port)
  mkdir -p "$data"
  chown postgres: "$data"
  runuser -u postgres -- "$PGBIN/initdb" -U postgres --auth=trust -E UTF8 --no-locale \
    -D "$data" >"$BENCH_DIR/pglogs/$fs-initdb.log" 2>&1
  cat >>"$data/postgresql.conf" <<CONF
shared_buffers = '128MB'
wal_sync_method = '$WAL_SYNC_METHOD'
max_wal_size = '4GB'
checkpoint_timeout = '30min'
listen_addresses = '127.0.0.1'
port = ${PORT[$fs]}
unix_socket_directories = '$BENCH_DIR/pglogs'
CONF
  runuser -u postgres -- "$PGBIN/pg_ctl" start -w -t 120 -D "$data" \
    -l "$BENCH_DIR/pglogs/$fs-server.log" >/dev/null
  log "$fs: pgbench -i -s $SCALE"
  "$PGBIN/pgbench" -h 127.0.0.1 -p "${PORT[$fs]}" -U postgres -i -q -s "$SCALE" postgres \
    >>"$BENCH_DIR/$fs-pgbench.log" 2>&1
  "$PGBIN/psql" -h 127.0.0.1 -p "${PORT[$fs]}" -U postgres -X -q -c checkpoint postgres
}

pgbench_run() { # fs seconds args... -> prints tps
  local fs=$1 seconds=$2 tps
  shift 2
  # Checkpoint first so that no run inherits another's dirty buffers.
  "$PGBIN/psql" -h 127.0.0.1 -p "${PORT[$fs]}" -U postgres -X -q -c checkpoint postgres
  tps=$("$PGBIN/pgbench" -h 127.0.0.1 -p "${PORT[$fs]}" -U postgres -c4 -j2 -T "$seconds" "$@" \
    postgres 2>&1 | tee -a "$BENCH_DIR/$fs-pgbench.log" |
    sed -n 's/^tps = \([0-9]*\)[0-9.]* (without initial connection time)/\1/p')
  [[ -n "$tps" ]] || die "$fs: pgbench printed no tps (see $BENCH_DIR/$fs-pgbench.log)"
  echo "$tps"
}

pgbench_round() { # fs phase args...
  local fs=$1 phase=$2 tps
  shift 2
  tps=$(pgbench_run "$fs" "$DURATION" "$@")
  log "$fs: $phase $tps tps"
  sample "$fs.$phase" "$tps"
}

cpu_ticks() { # pid...: CPU clock ticks used by each process, its reaped children and its live ones
  local total=0 pid child stat f
  for pid in "$@"; do
    # /proc/PID/stat after "(comm) ": state, ..., utime [11], stime, cutime, cstime [14]
    stat=$(<"/proc/$pid/stat")
    read -r -a f <<<"${stat##*) }"
    total=$((total + f[11] + f[12] + f[13] + f[14]))
    for child in $(ps -o pid= --ppid "$pid"); do
      # A child that exits meanwhile has no stat left; its parent's cutime counts it later.
      stat=$(cat "/proc/$child/stat" 2>/dev/null) || continue
      read -r -a f <<<"${stat##*) }"
      total=$((total + f[11] + f[12]))
    done
  done
  echo "$total"
}

server_up() { # fs: waits while its server replays WAL after a crash; false when it has shut down
  for _ in $(seq 1 1200); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "${PORT[$1]}" && return 0
    [[ -f ${DIR[$1]}/pgdata/postmaster.pid ]] || return 1
    sleep 0.5
  done
  return 1
}

regress_round() { # fs round
  local fs=$1 out=$BENCH_DIR/regress/$1-$2 pids t0 t1 c0 c1 wall cpu failed where=""
  mkdir -p "$out/results"
  chown postgres: "$out/results" # the server writes COPY ... TO files there
  "$PGBIN/psql" -h 127.0.0.1 -p "${PORT[$fs]}" -U postgres -X -q -c checkpoint postgres
  pids=("$(head -1 "${DIR[$fs]}/pgdata/postmaster.pid")" ${PID[$fs]:+"${PID[$fs]}"})
  c0=$(cpu_ticks "${pids[@]}")
  t0=$EPOCHREALTIME
  # pg_regress drops and creates the database `regression` itself and runs up to 20 tests at once
  # (PostgreSQL's own setting); it exits 1 when a test fails.
  "$PG_REGRESS" --host=127.0.0.1 --port="${PORT[$fs]}" \
    --user=postgres --bindir="$PGBIN" --inputdir="$REGRESS" --outputdir="$out" --dlpath="$REGRESS" \
    --max-concurrent-tests=20 --schedule="$REGRESS/parallel_schedule" >"$out/pg_regress.log" 2>&1 || true
  t1=$EPOCHREALTIME
  c1=$(cpu_ticks "${pids[@]}")
  if grep -q '^ *All [0-9]* tests passed' "$out/pg_regress.log"; then
    failed=0
  else
    failed=$(sed -n 's/^ *\([0-9]*\) of [0-9]* tests failed.*/\1/p' "$out/pg_regress.log")
    [[ -n $failed ]] || die "$fs: pg_regress did not run the suite (see $out/pg_regress.log)"
  fi
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  cpu=$(awk -v t="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }')
  ((failed == 0)) || where=" (see $out/regression.diffs)"
  log "$fs: core regression suite $wall s, $cpu CPU s, $failed failed$where"
  sample "$fs.regress_wall" "$wall"
  sample "$fs.regress_cpu" "$cpu"
  sample "$fs.regress_failed" "$failed"
}

# --- run ---------------------------------------------------------------------------------------
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
if [[ $BACKING == tmpfs ]]; then
  mount -t tmpfs -o size=$((3 * IO_MIB + 2048))m pgcmk-bench "$BENCH_DIR"
  TMPFS_MOUNTED=1
fi
mkdir -p "$BENCH_DIR/pglogs"
chmod 755 "$BENCH_DIR"
chown postgres: "$BENCH_DIR/pglogs" # server logs and unix sockets, outside every mount
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "scale $SCALE, $ROUNDS x $DURATION s per pgbench phase, $IO_MIB MiB file I/O, $RAND_OPS random ops"
for fs in $ONLY; do setup "$fs"; done
for round in $(seq 1 "$ROUNDS"); do
  for fs in $ONLY; do
    log "file I/O round $round: $fs"
    io_round "$fs"
  done
done
PG_ROUNDS=$ROUNDS
if ((IO_ONLY)); then
  PG_ROUNDS=0 WARMUP=0
else
  for fs in $ONLY; do pg_init "$fs"; done
fi
if ((WARMUP > 0)); then
  for fs in $ONLY; do log "$fs: warm-up tpcb $(pgbench_run "$fs" "$WARMUP") tps (not measured)"; done
fi
for phase in tpcb select; do
  args=()
  [[ $phase == select ]] && args=(-S)
  for round in $(seq 1 "$PG_ROUNDS"); do
    for fs in $ONLY; do pgbench_round "$fs" "$phase" "${args[@]}"; done
  done
done
for round in $(seq 1 "$REGRESS_ROUNDS"); do
  for fs in $ONLY; do
    if server_up "$fs"; then
      regress_round "$fs" "$round"
    else
      log "$fs: its server is down after a crash (see $BENCH_DIR/pglogs/$fs-server.log): no round $round"
    fi
  done
done
for fs in $ONLY; do
  [[ -n "${PID[$fs]:-}" ]] && sample "$fs.rss" "$(awk '/^VmHWM/ {printf "%.0f", $2/1024}' "/proc/${PID[$fs]}/status")"
  teardown "$fs"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- table -------------------------------------------------------------------------------------
for k in "${!R[@]}"; do printf '%s\t%s\n' "$k" "${R[$k]}"; done >"$BENCH_DIR/results.tsv"
python3 bench/cryptfs/table.py "$BENCH_DIR/results.tsv" "$ONLY" \
  "pgbench scale $SCALE, -c4 -j2, wal_sync_method $WAL_SYNC_METHOD, $WARMUP s TPC-B warm-up, median of $ROUNDS x $DURATION s per phase; core regression suite: median of $REGRESS_ROUNDS; file I/O on a $IO_MIB MiB file on $BACKING, $FILES files (median of $ROUNDS); RT=$RT; $(nproc) cores, $(free -g | awk '/^Mem/ {print $2}') GiB; load average $LOAD_BEFORE before, $LOAD_AFTER after; cryptfs flags: ${CRYPTFS_FLAGS:-(defaults)}$([[ " $ONLY " == *" cryptfs-b "* ]] && echo "; cryptfs-b: ${CRYPTFS_B_BIN:-same build}, flags ${CRYPTFS_B_FLAGS:-(defaults)}"); $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo "+changes"); $(date -u +%F)" |
  tee "$BENCH_DIR/results.md"
