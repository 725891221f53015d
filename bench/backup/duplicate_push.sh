#!/usr/bin/env bash
# What archive_mode=always costs a highly available server (docs/backups.md,
# "Highly available servers"): each WAL segment is pushed by both nodes, so one of
# the two pushes finds it in the repository already. One command: a plain
# PostgreSQL 15 cluster in a temporary directory (pgbench data, so the segments
# compress like real ones), a pgBackRest repository configured as pgcmk's (zstd,
# aes-256-cbc), every completed segment pushed once, then again; prints per segment
# the wall time and the CPU seconds (user + system) of the first push and of the
# second, the load average, and the warning pgBackRest logs for the second. The
# pushes are synchronous here so that their CPU is counted (the asynchronous pusher
# pgcmk runs does the same work in a detached process); one asynchronous second
# push shows what PostgreSQL's log gets.
# Options: --scale N (pgbench scale, 20: about 20 segments). Run as root.
set -euo pipefail
scale=20
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) scale="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
bin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/pgcmk-dup-push.XXXXXX)
chown postgres "$work"
pg() { runuser -u postgres -- "$@"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
pg "$bin/initdb" -D "$work/data" -A trust >/dev/null
pass=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
pg mkdir -p "$work/repo" "$work/log" "$work/spool" "$work/lock"
(umask 077; cat >"$work/pgbackrest.conf" <<EOF
[global]
repo1-path=$work/repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$pass
compress-type=zst
archive-async=n
spool-path=$work/spool
lock-path=$work/lock
log-path=$work/log
log-level-console=off
log-level-stderr=warn
log-level-file=info

[dup]
pg1-path=$work/data
pg1-port=$port
pg1-socket-path=$work
EOF
)
chown postgres "$work/pgbackrest.conf"
br() { pg pgbackrest --config="$work/pgbackrest.conf" --stanza=dup "$@"; }
pg "$bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
    -o "-p $port -k $work -c archive_mode=on -c archive_command=/bin/true -c max_wal_size=4GB" start >/dev/null
br stanza-create
pg pgbench -h "$work" -p "$port" -i -s "$scale" -q postgres >/dev/null 2>&1
pg psql -h "$work" -p "$port" -Atc "SELECT pg_switch_wal()" postgres >/dev/null
segments=$(cd "$work/data/pg_wal" && ls | grep -E '^[0-9A-F]{24}$' | sort | head -n -1)
count=$(echo "$segments" | wc -l)
echo "pgBackRest $(pgbackrest version | cut -d' ' -f2), $count segments of 16 MiB (pgbench scale $scale), zstd, aes-256-cbc"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
measure() {
    local label=$1 total_wall=0 total_cpu=0 out
    for s in $segments; do
        /usr/bin/time -o "$work/time" -f '%e %U %S' runuser -u postgres -- pgbackrest \
            --config="$work/pgbackrest.conf" --stanza=dup archive-push "$work/data/pg_wal/$s" \
            2>"$work/push.err"
        out=$(tail -1 "$work/time")
        total_wall=$(echo "$total_wall + $(echo "$out" | cut -d' ' -f1)" | bc)
        total_cpu=$(echo "$total_cpu + $(echo "$out" | cut -d' ' -f2) + $(echo "$out" | cut -d' ' -f3)" | bc)
    done
    printf '%-32s wall %6.3f s/segment   CPU %6.3f s/segment\n' "$label" \
        "$(echo "$total_wall / $count" | bc -l)" "$(echo "$total_cpu / $count" | bc -l)"
}
measure "first push (writes the repo)"
measure "second push (same checksum)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "what a second push says on stderr (sync):"
sed 's/^/    /' "$work/push.err"
sed -i 's/^archive-async=n/archive-async=y/' "$work/pgbackrest.conf"
last=$(echo "$segments" | tail -1)
# The asynchronous pusher takes the segments PostgreSQL marked ready.
pg touch "$work/data/pg_wal/archive_status/$last.ready"
echo "what a second push says on stderr (async, as pgcmk runs it):"
br archive-push "$work/data/pg_wal/$last" 2>&1 | sed 's/^/    /' || true
echo "archived files in the repository: $(find "$work/repo/archive" -name '*.zst' | wc -l) for $count segments"
