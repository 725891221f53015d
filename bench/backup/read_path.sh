#!/usr/bin/env bash
# The backup's read path, isolated: the same PostgreSQL data directory on the plain
# disk and on a cryptfs mount (`pgcmk fs mount`), backed up offline by pgBackRest
# with pgcmk's settings (zstd, aes-256-cbc), rounds alternating, with wall time,
# throughput, pgBackRest's CPU and the cryptfs daemon's CPU per GB, and what the
# mount saw (FUSE READ requests and their mean size, from its metrics).
# Each round is run cold (page cache dropped) and warm (read twice), and the cryptfs
# side with the mount's readahead as the kernel gives it (128 KiB) and raised.
# Options: --scale N (60: about 0.9 GB), --rounds R (3), --readahead-kb K (the
# raised value, 1024), --process-max P (1).
# Run as root; needs pgbackrest and PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/../.."
scale=60 rounds=3 raised_kb=1024 pmax=1
while [ $# -gt 0 ]; do
    case "$1" in
        --scale) scale=$2 ;;
        --rounds) rounds=$2 ;;
        --readahead-kb) raised_kb=$2 ;;
        --process-max) pmax=$2 ;;
        *) echo "unknown option $1: use --scale N --rounds R --readahead-kb K --process-max P" >&2; exit 2 ;;
    esac
    shift 2
done
cargo build --release --quiet -p pgcmk --bin pgcmk
PGCMK="${CARGO_TARGET_DIR:-$PWD/target}/release/pgcmk"
BIN=/usr/lib/postgresql/15/bin
root=$(mktemp -d /var/tmp/pgcmk-read-path.XXXXXX)
chmod 755 "$root"
fs_pid=""
pg_port=$((20000 + RANDOM % 20000))
metrics_port=$((pg_port + 1))
cleanup() {
    runuser -u postgres -- "$BIN/pg_ctl" -D "$root/plain/data" -m immediate stop >/dev/null 2>&1 || true
    if [ -n "$fs_pid" ]; then
        "$PGCMK" fs unmount "$root/mnt" >/dev/null 2>&1 || true
        kill "$fs_pid" 2>/dev/null || true
        wait "$fs_pid" 2>/dev/null || true
    fi
    rm -rf "$root"
}
trap cleanup EXIT

as_pg() { runuser -u postgres -- "$@"; }
cpu_of() { # user+system seconds of pid $1
    awk '{ split($0, a, ") "); split(a[2], f, " "); print (f[12] + f[13]) / 100 }' "/proc/$1/stat"
}
children_cpu() { # user+system seconds of the waited-for children of this shell
    awk '{ split($0, a, ") "); split(a[2], f, " "); print (f[14] + f[15]) / 100 }' "/proc/$$/stat"
}
metric() { # the sum of the samples of metric $1 whose labels contain $2
    curl -s "http://127.0.0.1:$metrics_port/metrics" | awk -v m="$1" -v l="$2" \
        'index($0, m) == 1 && (l == "" || index($0, l)) { s += $NF } END { printf "%.0f", s }'
}

mkdir -p "$root/plain" "$root/cipher" "$root/mnt" "$root/repo-plain" "$root/repo-fs" "$root/lock-plain" "$root/lock-fs"
"$PGCMK" fs keygen --out "$root/key" >/dev/null
"$PGCMK" fs init --cipher-dir "$root/cipher" --key-file "$root/key" >/dev/null
"$PGCMK" fs mount --cipher-dir "$root/cipher" --mountpoint "$root/mnt" --key-file "$root/key" \
    --allow-other --metrics-listen "127.0.0.1:$metrics_port" >"$root/fs.log" 2>&1 &
fs_pid=$!
for _ in $(seq 100); do grep -q " $root/mnt fuse" /proc/mounts && break; sleep 0.1; done
bdi=$(mountpoint -d "$root/mnt")
chown postgres: "$root/plain" "$root/mnt" "$root/repo-plain" "$root/repo-fs" "$root/lock-plain" "$root/lock-fs"

echo "loading pgbench scale $scale into a plain cluster" >&2
as_pg "$BIN/initdb" -D "$root/plain/data" -U postgres --auth=trust >/dev/null
as_pg "$BIN/pg_ctl" -D "$root/plain/data" -w -l "$root/plain/pg.log" \
    -o "-p $pg_port -k $root/plain -c listen_addresses=''" start >/dev/null
as_pg "$BIN/pgbench" -h "$root/plain" -p "$pg_port" -i -q -s "$scale" postgres >/dev/null 2>&1
as_pg "$BIN/pg_ctl" -D "$root/plain/data" -m fast -w stop >/dev/null
echo "copying it onto the cryptfs mount" >&2
as_pg cp -a "$root/plain/data" "$root/mnt/data"
sync
bytes=$(du -sb "$root/plain/data" | cut -f1)

for side in plain fs; do
    data="$root/plain/data"
    [ "$side" = fs ] && data="$root/mnt/data"
    cat >"$root/$side.conf" <<EOF
[global]
repo1-path=$root/repo-$side
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(printf 'b%.0s' $(seq 64))
compress-type=zst
process-max=$pmax
lock-path=$root/lock-$side
log-path=$root
log-level-console=off
log-level-file=off

[s]
pg1-path=$data
EOF
    chown postgres: "$root/$side.conf"
    as_pg pgbackrest --config="$root/$side.conf" --stanza=s --no-online stanza-create >/dev/null
done

backup() { # side label
    local side=$1 label=$2 fs_before cpu_before reads_before rbytes_before t0 t1
    fs_before=$(cpu_of "$fs_pid")
    reads_before=$(metric pgcmk_cryptfs_requests_total 'op="read"')
    rbytes_before=$(metric pgcmk_cryptfs_read_bytes_total '')
    cpu_before=$(children_cpu)
    t0=$(date +%s.%N)
    as_pg pgbackrest --config="$root/$side.conf" --stanza=s --no-online --type=full backup
    t1=$(date +%s.%N)
    awk -v label="$label" -v b="$bytes" -v t0="$t0" -v t1="$t1" \
        -v cpu="$(echo "$(children_cpu) - $cpu_before" | bc)" \
        -v fs="$(echo "$(cpu_of "$fs_pid") - $fs_before" | bc)" \
        -v reads="$(( $(metric pgcmk_cryptfs_requests_total 'op="read"') - reads_before ))" \
        -v rbytes="$(( $(metric pgcmk_cryptfs_read_bytes_total '') - rbytes_before ))" \
        -v load="$(cut -d' ' -f1 /proc/loadavg)" \
        'BEGIN { w = t1 - t0; gb = b / 1e9;
                 printf "| %s | %.1f s | %.1f MB/s | %.1f | %.1f | %d | %.0f | %s |\n",
                 label, w, b / 1e6 / w, cpu / gb, fs / gb, reads,
                 reads ? rbytes / reads / 1024 : 0, load }'
}

echo "data directory: $(echo "scale=2; $bytes / 1000000000" | bc) GB (pgbench scale $scale), process-max $pmax"
echo "mount's default read_ahead_kb: $(cat "/sys/class/bdi/$bdi/read_ahead_kb") (raised: $raised_kb)"
echo
echo "| side | wall | throughput | pgBackRest CPU s/GB | cryptfs daemon CPU s/GB | FUSE READs | mean READ KiB | load |"
echo "|---|---|---|---|---|---|---|---|"
default_kb=$(cat "/sys/class/bdi/$bdi/read_ahead_kb")
for round in $(seq "$rounds"); do
    for cache in cold warm; do
        for side in plain fs:"$default_kb" fs:"$raised_kb"; do
            if [ "$side" != plain ]; then
                echo "${side#fs:}" >"/sys/class/bdi/$bdi/read_ahead_kb"
            fi
            if [ "$cache" = cold ]; then
                sync
                echo 3 >/proc/sys/vm/drop_caches
            else
                cat "$([ "$side" = plain ] && echo "$root/plain/data" || echo "$root/mnt/data")"/base/*/* >/dev/null 2>&1 || true
            fi
            name="plain"
            [ "$side" != plain ] && name="cryptfs, readahead ${side#fs:} KiB"
            backup "${side%%:*}" "round $round, $cache, $name"
        done
    done
done
