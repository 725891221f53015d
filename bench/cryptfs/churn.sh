#!/usr/bin/env bash
# File-churn benchmark: the pgbench workload of bench/cryptfs/file_churn/ (many clients creating
# and dropping temporary tables and indexes, spilling sorts to pgsql_tmp, truncating and
# rewriting a table they all use, rewriting and dropping tables of their own) on the plain disk,
# cryptfs and gocryptfs side by side in one run; then, per filesystem, after a clean restart on
# a fresh mount, file_churn/check.sql (one logged row per transaction, each read back as
# written) and pg_amcheck --heapallindexed --all. One table: TPS, % of plain, CPU seconds of the
# FUSE daemon per 1000 transactions, and whether each check was clean.
#
#   bench/cryptfs/churn.sh          full run: 3 rounds x 120 s per filesystem, 16 clients
#   bench/cryptfs/churn.sh --quick  smoke run: 1 round x 20 s
#   env overrides: DURATION (s per pgbench run), ROUNDS, CLIENTS, BENCH_DIR,
#                  ONLY="plain cryptfs gocryptfs" (columns, in this order)
#
# Must run as root (mounts, runuser). Conventions of run.sh: every filesystem mounted at once,
# rounds taken round-robin across them (median TPS), the same postgresql.conf everywhere,
# cryptfs as `pgcmk fs mount` (release build) with its defaults, gocryptfs with plaintext names.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORKLOAD=$ROOT/bench/cryptfs/file_churn

if [[ "${1:-}" == "--quick" ]]; then
  : "${DURATION:=20}" "${ROUNDS:=1}"
else
  : "${DURATION:=120}" "${ROUNDS:=3}"
fi
: "${CLIENTS:=16}" "${BENCH_DIR:=/var/tmp/pgcmk-churn}" "${ONLY:=plain cryptfs gocryptfs}"
PGBIN=/usr/lib/postgresql/15/bin

die() { echo "churn: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
[[ $EUID -eq 0 ]] || die "run as root (mounts and runuser need it)"
for fs in $ONLY; do
  [[ $fs =~ ^(plain|cryptfs|gocryptfs)$ ]] || die "unknown filesystem '$fs' in ONLY (plain cryptfs gocryptfs)"
done
for p in fuse3 gocryptfs postgresql-15 postgresql-contrib; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    die "$p is not installed (scripts/setup installs it)"
done
log "building pgcmk (release)"
cargo build --release --quiet -p pgcmk
PGCMK=${CARGO_TARGET_DIR:-$ROOT/target}/release/pgcmk

# --- state and cleanup (only what this script started) ----------------------------------------
# Per filesystem: work dir, FUSE daemon pid, pg port; TPS samples (one per round), transactions,
# daemon CPU ticks and aborted pgbench clients summed over the rounds; the checks' verdicts.
declare -A DIR PID PORT TPS TX CPU ABORTED VERDICTS
cleanup() {
  for fs in $ONLY; do
    if [[ -n "${DIR[$fs]:-}" && -f "${DIR[$fs]}/pgdata/postmaster.pid" ]]; then
      runuser -u postgres -- "$PGBIN/pg_ctl" stop -m immediate -D "${DIR[$fs]}/pgdata" >/dev/null 2>&1 || true
    fi
    if mountpoint -q "$BENCH_DIR/$fs/mnt"; then
      fusermount3 -u "$BENCH_DIR/$fs/mnt" 2>/dev/null || umount "$BENCH_DIR/$fs/mnt" 2>/dev/null || true
    fi
    if [[ -n "${PID[$fs]:-}" ]] && kill -0 "${PID[$fs]}" 2>/dev/null; then
      kill "${PID[$fs]}" 2>/dev/null || true
      wait "${PID[$fs]}" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT

# --- filesystems under test --------------------------------------------------------------------
mount_fs() { # fs: mounts (initialising the cipher directory the first time); sets DIR and PID
  local fs=$1 base=$BENCH_DIR/$1
  DIR[$fs]=$base/mnt
  case $fs in
    plain) DIR[$fs]=$base; return ;;
    cryptfs)
      if [[ ! -f $base/key ]]; then
        "$PGCMK" fs keygen --out "$base/key" >/dev/null
        "$PGCMK" fs init --cipher-dir "$base/cipher" --key-file "$base/key" >/dev/null
      fi
      "$PGCMK" fs mount --cipher-dir "$base/cipher" --mountpoint "$base/mnt" --key-file "$base/key" \
        --allow-other >>"$base/daemon.log" 2>&1 &
      ;;
    gocryptfs)
      if [[ ! -f $base/pass ]]; then
        mkdir -p "$base/cipher"
        head -c 32 /dev/urandom | base64 >"$base/pass"
        chmod 600 "$base/pass"
        gocryptfs -init -q -plaintextnames -scryptn 10 -passfile "$base/pass" "$base/cipher"
      fi
      gocryptfs -fg -q -allow_other -passfile "$base/pass" "$base/cipher" "$base/mnt" \
        >>"$base/daemon.log" 2>&1 &
      ;;
  esac
  PID[$fs]=$!
  for _ in $(seq 1 500); do
    mountpoint -q "$base/mnt" && return 0
    kill -0 "${PID[$fs]}" 2>/dev/null || die "$fs daemon exited before mounting (see $base/daemon.log)"
    sleep 0.02
  done
  die "$base/mnt not mounted after 10 s"
}

unmount_fs() { # fs: unmounts a FUSE filesystem and waits for its daemon
  local fs=$1
  [[ -n "${PID[$fs]:-}" ]] || return 0
  if [[ $fs == cryptfs ]]; then "$PGCMK" fs unmount "${DIR[$fs]}" >/dev/null; else fusermount3 -u "${DIR[$fs]}"; fi
  wait "${PID[$fs]}" || die "$fs daemon exited with an error (see $BENCH_DIR/$fs/daemon.log)"
  PID[$fs]=""
}

daemon_ticks() { # fs: user + system CPU clock ticks of the FUSE daemon, all its threads, so far
  if [[ -n "${PID[$1]:-}" ]]; then awk '{print $14 + $15}' "/proc/${PID[$1]}/stat"; else echo 0; fi
}

pg_ctl() { # fs args...
  local fs=$1
  shift
  runuser -u postgres -- "$PGBIN/pg_ctl" "$@" -w -t 120 -D "${DIR[$fs]}/pgdata" >/dev/null
}

pg_stop() { # fs: fast shutdown, returning once the postmaster has exited: pg_ctl returns when
  # postmaster.pid is gone, while the postmaster may still hold the data directory (its working
  # directory), and unmounting then fails with EBUSY. A zombie holds nothing.
  local fs=$1 pid
  [[ -f "${DIR[$fs]}/pgdata/postmaster.pid" ]] || return 0 # not running (it may have crashed)
  pid=$(head -1 "${DIR[$fs]}/pgdata/postmaster.pid")
  pg_ctl "$fs" stop -m fast
  for _ in $(seq 1 1500); do
    [[ -e /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 0
    sleep 0.02
  done
  die "$fs: postmaster $pid still running 30 s after pg_ctl stop"
}

sql() { # fs psql-args...
  local fs=$1
  shift
  "$PGBIN/psql" -h 127.0.0.1 -p "${PORT[$fs]}" -U postgres -X -q -A -t -v ON_ERROR_STOP=1 "$@" postgres
}

pg_init() { # fs: a cluster on the filesystem, started, with the workload's tables
  local fs=$1 data=${DIR[$1]}/pgdata
  PORT[$fs]=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$data"
  chown postgres: "$data"
  runuser -u postgres -- "$PGBIN/initdb" -U postgres --auth=trust -E UTF8 --no-locale \
    -D "$data" >"$BENCH_DIR/pglogs/$fs-initdb.log" 2>&1
  cat >>"$data/postgresql.conf" <<CONF
shared_buffers = '128MB'
wal_sync_method = 'open_datasync'
listen_addresses = '127.0.0.1'
port = ${PORT[$fs]}
unix_socket_directories = '$BENCH_DIR/pglogs'
CONF
  pg_ctl "$fs" start -l "$BENCH_DIR/pglogs/$fs-server.log"
  sql "$fs" -f "$WORKLOAD/setup.sql"
}

churn_round() { # fs: one pgbench run, added to the filesystem's samples and sums
  local fs=$1 out=$BENCH_DIR/$1-pgbench-round.log before tps tx
  before=$(daemon_ticks "$fs")
  "$PGBIN/pgbench" -h 127.0.0.1 -p "${PORT[$fs]}" -U postgres -n -c "$CLIENTS" -j 2 -T "$DURATION" \
    -f "$WORKLOAD/churn.sql" postgres >"$out" 2>&1 || true # aborted clients are counted below
  CPU[$fs]=$((${CPU[$fs]:-0} + $(daemon_ticks "$fs") - before))
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  TPS[$fs]="${TPS[$fs]:-}${TPS[$fs]:+ }${tps:-0}"
  TX[$fs]=$((${TX[$fs]:-0} + ${tx:-0}))
  ABORTED[$fs]=$((${ABORTED[$fs]:-0} + $(grep -c "^pgbench: error: client [0-9]* .*aborted" "$out" || true)))
  cat "$out" >>"$BENCH_DIR/$fs-pgbench.log"
  log "$fs: ${tps:-no} tps, ${tx:-no} transactions"
}

verdict() { # problem-count file: "clean", or how many problems and the file that lists them
  if (($1 == 0)); then echo clean; else echo "$1 ($(basename "$2"))"; fi
}

check() { # fs: restart on a fresh mount, then check.sql, pg_amcheck and the server log
  local fs=$1 out=$BENCH_DIR/$1 server_log=$BENCH_DIR/pglogs/$1-server.log
  pg_stop "$fs"
  unmount_fs "$fs"
  mount_fs "$fs"
  if pg_ctl "$fs" start -l "$server_log"; then
    sql "$fs" -v transactions="${TX[$fs]}" -f "$WORKLOAD/check.sql" >"$out-rows.txt" 2>&1 ||
      echo "check.sql failed" >>"$out-rows.txt"
    "$PGBIN/pg_amcheck" -h 127.0.0.1 -p "${PORT[$fs]}" -U postgres --heapallindexed --install-missing \
      --all >"$out-amcheck.txt" 2>/dev/null || echo "pg_amcheck exited with $?" >>"$out-amcheck.txt"
    pg_stop "$fs"
  else
    echo "the server did not start again" | tee "$out-rows.txt" >"$out-amcheck.txt"
  fi
  grep -F -f <(grep -v -e '^#' -e '^ok: ' -e '^$' "$WORKLOAD/log-errors.txt") "$server_log" |
    grep -v -F -f <(sed -n 's/^ok: //p' "$WORKLOAD/log-errors.txt") >"$out-log-errors.txt" || true
  VERDICTS[$fs]="$(verdict "${ABORTED[$fs]}" "$fs-pgbench.log") | $(verdict "$(wc -l <"$out-rows.txt")" "$out-rows.txt")"
  VERDICTS[$fs]+=" | $(verdict "$(wc -l <"$out-amcheck.txt")" "$out-amcheck.txt")"
  VERDICTS[$fs]+=" | $(verdict "$(wc -l <"$out-log-errors.txt")" "$out-log-errors.txt")"
}

median() { tr ' ' '\n' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# --- run ---------------------------------------------------------------------------------------
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/pglogs"
chmod 755 "$BENCH_DIR"
chown postgres: "$BENCH_DIR/pglogs" # server logs and unix sockets, outside every mount
log "$CLIENTS clients, $ROUNDS x $DURATION s per filesystem"
for fs in $ONLY; do
  mkdir -p "$BENCH_DIR/$fs/mnt"
  mount_fs "$fs"
  pg_init "$fs"
done
for round in $(seq 1 "$ROUNDS"); do
  for fs in $ONLY; do churn_round "$fs"; done
done
for fs in $ONLY; do
  log "$fs: restart on a fresh mount, check.sql, pg_amcheck, server log"
  check "$fs"
  unmount_fs "$fs"
done

# --- table -------------------------------------------------------------------------------------
plain_tps=$(median <<<"${TPS[plain]:-}")
{
  echo
  echo "pgbench -f bench/cryptfs/file_churn/churn.sql -c $CLIENTS -j 2, median of $ROUNDS x $DURATION s; checks after a restart on a fresh mount; $(nproc) cores; $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo "+changes"); $(date -u +%F)"
  echo
  echo "| filesystem | TPS | % of plain | daemon CPU s / 1000 tx | transactions | pgbench aborts | rows check | pg_amcheck | server log errors |"
  echo "|---|---:|---:|---:|---:|---|---|---|---|"
  for fs in $ONLY; do
    tps=$(median <<<"${TPS[$fs]}")
    ratio=-
    [[ -n "$plain_tps" && "$plain_tps" != 0 ]] && ratio=$(awk -v a="$tps" -v b="$plain_tps" 'BEGIN {printf "%.1f", 100 * a / b}')
    cpu=-
    [[ $fs != plain && ${TX[$fs]} -gt 0 ]] &&
      cpu=$(awk -v t="${CPU[$fs]}" -v hz="$(getconf CLK_TCK)" -v n="${TX[$fs]}" 'BEGIN {printf "%.2f", t / hz / n * 1000}')
    printf '| %s | %.1f | %s | %s | %s | %s |\n' "$fs" "$tps" "$ratio" "$cpu" "${TX[$fs]}" "${VERDICTS[$fs]}"
  done
  echo
  echo "Details of anything not clean: $BENCH_DIR/<filesystem>-*.txt and $BENCH_DIR/<filesystem>-pgbench.log"
} | tee "$BENCH_DIR/results.md"
