#!/usr/bin/env bash
# The s3cachefs benchmark: runs the same workloads on s3cachefs and, where
# installed, s3fs and rclone against one S3 server (our pinned s3rver on
# loopback, behind a userspace delay relay), measures the limits of the same
# machine in the same run (local disk, raw S3 requests) and prints a markdown
# table of each figure and its ratio to its limit, with each daemon's peak
# resident memory.  README.md ("Performance") explains the rows.
#
#   tools/bench/run.sh              full dataset (1 GiB, 256 MiB, 2000 files)
#   QUICK=1 tools/bench/run.sh      small dataset, a few minutes
#
# Knobs (environment), defaults in brackets:
#   SYSTEMS      [s3cachefs + s3fs, rclone if installed] systems to compare
#   WORKLOADS    [seq rand small ls parquet write]
#   REPS         [3] repetitions, the median is reported
#   DELAY_MS     [10] one-way delay added between clients and the server
#   BIG_MB MID_MB PARQ_MB SMALL_COUNT SMALL_DIRS WRITE_MB WRITE_FILES
#                [1024 256 128 2000 40 256 500]; QUICK=1: [128 64 32 300 40 64 100]
#   FIO_4K_IOS FIO_128K_IOS FIO_MAX_S  [500 200 60] random reads and their time cap
#   OURS_OPTS    extra s3cachefs -o options (e.g. writeback=async)
#   S3FS_OPTS RCLONE_OPTS  extra s3fs -o options, extra rclone arguments
#   OURS_BIN  use this binary instead of building build-bench (release)
#   WORK_DIR     [.bench] server data, dataset, caches, mount point, logs
#   RESULTS_DIR  [tools/bench/results] where the table is written
#   LABEL        [bench] suffix of the result file name
# Every mount and process it starts is unmounted/stopped by PID on exit,
# also on Ctrl-C.
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$here/../lib/common.sh"

known_systems="s3cachefs s3fs rclone"
known_workloads="seq rand small ls parquet write"

if [ "${QUICK:-0}" = 1 ]; then
    q=(128 64 32 300 64 100)
else
    q=(1024 256 128 2000 256 500)
fi
: "${BIG_MB:=${q[0]}}" "${MID_MB:=${q[1]}}" "${PARQ_MB:=${q[2]}}" "${SMALL_COUNT:=${q[3]}}"
: "${WRITE_MB:=${q[4]}}" "${WRITE_FILES:=${q[5]}}" "${SMALL_DIRS:=40}"
: "${FIO_4K_IOS:=500}" "${FIO_128K_IOS:=200}" "${FIO_MAX_S:=60}"
: "${REPS:=3}" "${DELAY_MS:=10}" "${LABEL:=bench}"
: "${WORKLOADS:=$known_workloads}"
: "${WORK_DIR:=$repo_root/.bench}" "${RESULTS_DIR:=$here/results}"
if [ -z "${SYSTEMS:-}" ]; then
    SYSTEMS=s3cachefs
    command -v s3fs >/dev/null 2>&1 && SYSTEMS+=" s3fs"
    command -v rclone >/dev/null 2>&1 && SYSTEMS+=" rclone"
fi
export BIG_MB MID_MB PARQ_MB SMALL_COUNT SMALL_DIRS WRITE_MB WRITE_FILES FIO_4K_IOS FIO_128K_IOS

# ---- knobs are checked before anything is started -------------------------------
for v in BIG_MB MID_MB PARQ_MB SMALL_COUNT SMALL_DIRS WRITE_MB WRITE_FILES FIO_4K_IOS \
    FIO_128K_IOS FIO_MAX_S REPS DELAY_MS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
[ "$REPS" -ge 1 ] || die "REPS must be at least 1"
for v in BIG_MB MID_MB PARQ_MB WRITE_MB; do
    [ "${!v}" -ge 1 ] || die "$v must be at least 1"
done
for s in $SYSTEMS; do
    [[ " $known_systems " == *" $s "* ]] || die "unknown system '$s' in SYSTEMS (known: $known_systems)"
done
for w in $WORKLOADS; do
    [[ " $known_workloads " == *" $w "* ]] || die "unknown workload '$w' in WORKLOADS (known: $known_workloads)"
done
[[ $LABEL =~ ^[A-Za-z0-9._-]+$ ]] || die "LABEL may hold only letters, digits, '.', '_' and '-', not '$LABEL'"
[ "$(id -u)" = 0 ] || die "must run as root (drop_caches, FUSE mounts)"

# ---- what runs, and how it is stopped ------------------------------------------------
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
export BENCH_BUCKET=bench
mnt=$WORK_DIR/mnt
server_pidfile=$WORK_DIR/s3rver.pid
proxy_pid=
mount_pid=
mount_sys=
tsv=

# unmount: unmount the benchmark mount, wait for its daemon; record its peak RSS
unmount() {
    if [ -n "$mount_pid" ] && [ -r "/proc/$mount_pid/status" ] && [ -n "$tsv" ]; then
        awk -v s="$mount_sys" '/^VmHWM:/ { print s, "rss_kib", $2 }' "/proc/$mount_pid/status" >>"$tsv"
    fi
    # /proc/mounts, not mountpoint(1): a dead FUSE mount (its daemon gone)
    # fails every stat with ENOTCONN and must be cleared too
    if awk -v m="$mnt" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; then
        fusermount3 -u "$mnt" 2>/dev/null || { sleep 1; fusermount3 -u "$mnt"; } ||
            fusermount3 -u -z "$mnt" || true
    fi
    if [ -n "$mount_pid" ]; then
        local i
        for i in $(seq 1 600); do
            kill -0 "$mount_pid" 2>/dev/null || break
            [ "$i" = 300 ] && kill "$mount_pid" 2>/dev/null
            sleep 0.1
        done
        wait "$mount_pid" 2>/dev/null || true
    fi
    mount_pid=
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    unmount
    if [ -n "$proxy_pid" ]; then
        kill "$proxy_pid" 2>/dev/null || true
        wait "$proxy_pid" 2>/dev/null || true
    fi
    stop_pidfile "$server_pidfile"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools -------------------------------------------------------------------------------
install_deps
need=()
command -v fio >/dev/null 2>&1 || need+=(fio)
for s in $SYSTEMS; do
    [ "$s" != s3cachefs ] && ! command -v "$s" >/dev/null 2>&1 && need+=("$s")
done
if [ "${#need[@]}" -gt 0 ]; then
    say "installing: ${need[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
py=
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import boto3' 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || die "no python3 with boto3 (install python3-boto3)"
bench() { "$py" "$here/s3bench.py" "$@"; }

if [ -n "${OURS_BIN:-}" ]; then
    bin=$OURS_BIN
else
    build build-bench --buildtype=release
    bin=$repo_root/build-bench/src/s3cachefs
fi
[ -x "$bin" ] || die "no s3cachefs binary at '$bin'"

# ---- server, delay, dataset ----------------------------------------------------------------
mkdir -p "$WORK_DIR" "$RESULTS_DIR"
rm -rf "$WORK_DIR/s3rver" "$WORK_DIR/caches" "$WORK_DIR/wlocal"
mkdir -p "$WORK_DIR/logs" "$mnt"
mnt=$(realpath "$mnt") # as /proc/mounts names it
mountpoint -q "$mnt" && die "'$mnt' is already a mount point"
port=$(free_port)
say "starting s3rver on 127.0.0.1:$port"
start_s3rver "$WORK_DIR/s3rver" "$port" "$server_pidfile" "$BENCH_BUCKET"
if [ "$DELAY_MS" -gt 0 ]; then
    pport=$(free_port)
    "$py" "$here/delayproxy.py" "$pport" "$port" "$DELAY_MS" >"$WORK_DIR/logs/delayproxy.log" 2>&1 &
    proxy_pid=$!
    for i in $(seq 1 100); do
        "$py" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' \
            "$pport" 2>/dev/null && break
        kill -0 "$proxy_pid" 2>/dev/null || die "the delay relay exited: see $WORK_DIR/logs/delayproxy.log"
        [ "$i" = 100 ] && die "the delay relay did not answer on port $pport"
        sleep 0.1
    done
    export BENCH_ENDPOINT=http://127.0.0.1:$pport
else
    export BENCH_ENDPOINT=http://127.0.0.1:$port
fi
local_dir=$WORK_DIR/data
say "dataset in $local_dir, uploading to s3://$BENCH_BUCKET (${DELAY_MS} ms one-way delay)"
bench populate "$local_dir" >/dev/null
objects=$WORK_DIR/s3rver/$BENCH_BUCKET

stamp=$(date -u +%Y-%m-%d-%H%M)
tsv=$RESULTS_DIR/$stamp-$LABEL.tsv
report=$RESULTS_DIR/$stamp-$LABEL.md
: >"$tsv"

# ---- helpers ---------------------------------------------------------------------------------
# record SYS ROW CMD...: run CMD, which prints one figure, and keep it
record() {
    local v
    v=$("${@:3}")
    keep "$1" "$2" "$v"
}
keep() { printf '%s %s %s\n' "$1" "$2" "$3" >>"$tsv"; }

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# server_files KEY...: read the server's copy of KEYs (or of every key under
# a KEY/ folder) into the page cache, so s3rver never waits for its disk.
server_files() {
    local k
    for k in "$@"; do
        if [ -d "$objects/$k" ]; then
            find "$objects/$k" -type f -exec cat {} + >/dev/null
        else
            cat "$objects/$k._S3rver_object" >/dev/null
        fi
    done
}

mount_fs() {
    local sys=$1 cache=$WORK_DIR/caches/$1 log=$WORK_DIR/logs/$1.log i
    mkdir -p "$cache"
    mount_sys=$sys
    case $sys in
    s3cachefs)
        "$bin" "$BENCH_BUCKET" "$mnt" -f -o \
            "endpoint=$BENCH_ENDPOINT,region=us-east-1,cache_dir=$cache,path_style${OURS_OPTS:+,$OURS_OPTS}" \
            >>"$log" 2>&1 </dev/null &
        ;;
    s3fs)
        printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WORK_DIR/passwd-s3fs"
        chmod 600 "$WORK_DIR/passwd-s3fs"
        s3fs "$BENCH_BUCKET" "$mnt" -f -o \
            "url=$BENCH_ENDPOINT,use_path_request_style,endpoint=us-east-1,passwd_file=$WORK_DIR/passwd-s3fs,use_cache=$cache${S3FS_OPTS:+,$S3FS_OPTS}" \
            >>"$log" 2>&1 </dev/null &
        ;;
    rclone)
        printf '[bench]\ntype = s3\nprovider = Other\naccess_key_id = %s\nsecret_access_key = %s\nregion = us-east-1\nendpoint = %s\nforce_path_style = true\n' \
            "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" "$BENCH_ENDPOINT" >"$WORK_DIR/rclone.conf"
        # The endpoint is plain http; rclone's AWS SDK refuses to start
        # when AWS_CA_BUNDLE is set.
        # shellcheck disable=SC2086 # RCLONE_OPTS is a list of words
        env -u AWS_CA_BUNDLE rclone mount "bench:$BENCH_BUCKET" "$mnt" --config "$WORK_DIR/rclone.conf" \
            --cache-dir "$cache" --vfs-cache-mode full ${RCLONE_OPTS:-} \
            >>"$log" 2>&1 </dev/null &
        ;;
    esac
    mount_pid=$!
    for i in $(seq 1 300); do
        mountpoint -q "$mnt" && return 0
        kill -0 "$mount_pid" 2>/dev/null || die "$sys exited before mounting: $(tail -n 1 "$log")"
        sleep 0.1
    done
    die "$sys did not mount '$mnt' in 30 s (log: $log)"
}

# cold SYS KEY...: empty SYS's cache, mount, drop the page cache, warm the server
cold() {
    local sys=$1
    shift
    rm -rf "$WORK_DIR/caches/$sys"
    mount_fs "$sys"
    drop_caches
    server_files "$@"
}

# warm SYS KEY...: mount with the cache of the last run, drop the page cache
warm() {
    local sys=$1
    shift
    mount_fs "$sys"
    drop_caches
    server_files "$@"
}

# fio_run JOB FILE bw|iops [VAR=VALUE...]: one fio job on FILE, one figure
fio_run() {
    local job=$1 file=$2 what=$3
    shift 3
    env FILE="$file" MAXS="$FIO_MAX_S" "$@" fio --readonly --output-format=json \
        --output="$WORK_DIR/fio.json" "$here/fio/$job.fio" >/dev/null
    bench fio "$WORK_DIR/fio.json" "$what"
}

fio4k() { fio_run rand "$1" iops BS=4k IOS="$FIO_4K_IOS"; }
fio128k() { fio_run rand "$1" iops BS=128k IOS="$FIO_128K_IOS"; }

# ---- workloads: each WL_NAME SYS measures SYS; SYS=limit measures the limits ----
wl_seq() {
    local s=$1
    if [ "$s" = limit ]; then
        drop_caches
        server_files big.bin
        record limit raw_seq4 bench raw seq4
        record limit raw_seq1 bench raw seq1
        drop_caches
        record limit local_seq fio_run seq "$local_dir/big.bin" bw
        return
    fi
    cold "$s" big.bin
    record "$s" seq_cold fio_run seq "$mnt/big.bin" bw
    unmount
    warm "$s" big.bin
    record "$s" seq_warm fio_run seq "$mnt/big.bin" bw
    unmount
}

wl_rand() {
    local s=$1
    if [ "$s" = limit ]; then
        drop_caches
        server_files mid.bin
        record limit raw_r4k bench raw r4k
        record limit raw_r128k bench raw r128k
        drop_caches
        record limit local_r4k fio4k "$local_dir/mid.bin"
        drop_caches
        record limit local_r128k fio128k "$local_dir/mid.bin"
        return
    fi
    cold "$s" mid.bin
    record "$s" r4k_cold fio4k "$mnt/mid.bin"
    unmount
    warm "$s" mid.bin
    record "$s" r4k_warm fio4k "$mnt/mid.bin"
    unmount
    cold "$s" mid.bin
    record "$s" r128k_cold fio128k "$mnt/mid.bin"
    unmount
    warm "$s" mid.bin
    record "$s" r128k_warm fio128k "$mnt/mid.bin"
    unmount
}

wl_small() {
    local s=$1
    if [ "$s" = limit ]; then
        drop_caches
        server_files tree
        record limit raw_small1 bench raw small1
        record limit raw_small8 bench raw small8
        drop_caches
        record limit local_small1 bench small "$local_dir" 1
        drop_caches
        record limit local_small8 bench small "$local_dir" 8
        return
    fi
    cold "$s" tree
    record "$s" small1_cold bench small "$mnt" 1
    unmount
    cold "$s" tree
    record "$s" small8_cold bench small "$mnt" 8
    unmount
    warm "$s" tree
    record "$s" small1_warm bench small "$mnt" 1
    drop_caches
    record "$s" small8_warm bench small "$mnt" 8
    unmount
}

wl_ls() {
    local s=$1
    if [ "$s" = limit ]; then
        drop_caches
        server_files tree
        record limit raw_list bench raw list
        drop_caches
        record limit local_ls bench ls "$local_dir/tree"
        return
    fi
    cold "$s" tree
    record "$s" ls_fresh bench ls "$mnt/tree"
    record "$s" ls_again bench ls "$mnt/tree"
    unmount
    warm "$s" tree
    record "$s" ls_remount bench ls "$mnt/tree"
    unmount
}

wl_parquet() {
    local s=$1
    if [ "$s" = limit ]; then
        drop_caches
        server_files data.parquet
        record limit raw_parq bench raw parq
        drop_caches
        record limit local_parq bench parquet "$local_dir/data.parquet"
        return
    fi
    cold "$s" data.parquet
    record "$s" parq_cold bench parquet "$mnt/data.parquet"
    unmount
    warm "$s" data.parquet
    record "$s" parq_warm bench parquet "$mnt/data.parquet"
    unmount
}

wl_write() {
    local s=$1 r
    if [ "$s" = limit ]; then
        rm -rf "$WORK_DIR/wlocal"
        mkdir -p "$WORK_DIR/wlocal"
        drop_caches
        r=$(bench write "$local_dir/wsrc/big.bin" "$WORK_DIR/wlocal/" -)
        keep limit local_wbig "${r% *}"
        r=$(bench write "$local_dir/wsrc/tree" "$WORK_DIR/wlocal/" -)
        keep limit local_wtree "${r% *}"
        rm -rf "$WORK_DIR/wlocal"
        record limit raw_put1 bench raw put1 "$local_dir" "$rep"
        record limit raw_put8 bench raw put8 "$local_dir" "$rep"
        return
    fi
    cold "$s"
    mkdir "$mnt/w-$s-$rep"
    drop_caches
    r=$(bench write "$local_dir/wsrc/big.bin" "$mnt/w-$s-$rep/" "w-$s-$rep")
    keep "$s" wbig_close "${r% *}"
    keep "$s" wbig_durable "${r#* }"
    r=$(bench write "$local_dir/wsrc/tree" "$mnt/w-$s-$rep/" "w-$s-$rep")
    keep "$s" wtree_close "${r% *}"
    keep "$s" wtree_durable "${r#* }"
    unmount
}

# ---- the run -----------------------------------------------------------------------------------
for rep in $(seq 1 "$REPS"); do
    for w in $WORKLOADS; do
        say "rep $rep/$REPS: $w (limits, $SYSTEMS)"
        "wl_$w" limit
        for s in $SYSTEMS; do
            "wl_$w" "$s"
        done
    done
done

{
    printf '# s3cachefs benchmark, %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf -- '- machine: %s, %s CPUs, %s MiB RAM, Linux %s\n' \
        "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" "$(nproc)" \
        "$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)" "$(uname -r)"
    printf -- '- versions: %s\n' "$(for s in $SYSTEMS; do case $s in
        s3cachefs) echo "s3cachefs $(git -C "$repo_root" describe --always --dirty 2>/dev/null || echo '?')${OURS_OPTS:+ -o $OURS_OPTS}" ;;
        s3fs) s3fs --version 2>&1 | head -n 1 ;;
        rclone) rclone version 2>/dev/null | head -n 1 ;;
        esac; done | paste -sd ';' - | sed 's/;/; /g')"
    printf -- '- command: %s\n' "\`QUICK=${QUICK:-0} REPS=$REPS DELAY_MS=$DELAY_MS SYSTEMS=\"$SYSTEMS\" WORKLOADS=\"$WORKLOADS\"${OURS_OPTS:+ OURS_OPTS=$OURS_OPTS} tools/bench/run.sh\`"
    printf -- '- dataset: big %s MiB, mid %s MiB, parquet-like %s MiB, %s small files in %s folders, written %s MiB + %s files\n' \
        "$BIG_MB" "$MID_MB" "$PARQ_MB" "$SMALL_COUNT" "$SMALL_DIRS" "$WRITE_MB" "$WRITE_FILES"
    printf -- '- value per system, median of %s; (ratio to the limit: rate / limit, or limit time / time; 1.00 = at the limit)\n\n' "$REPS"
    bench report "$tsv"
} >"$report"
cat "$report"
say "written to $report"
