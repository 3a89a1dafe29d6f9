#!/usr/bin/env bash
# scale.sh - how listing, find and stat costs grow with the bucket, and what
# a cache hit costs with a few vs many chunks in the cache.
#
# Usage: tools/bench/scale.sh [BUILD_DIR]      (as root: FUSE mounts)
#
# Starts the repository's test S3 server (tests/s3rver) on loopback, no added
# delay, and fills bucket "scale" with N (default 100,000) small objects by
# writing the server's on-disk files directly:
#   big/f00000 ... big/f09999          one folder of 10,000 files
#   t/dNNN/sMM/fKK                     the rest, 100 per folder
# Then, for s3cachefs and (when installed) s3fs and rclone, each on a fresh
# mount with an empty cache ("cold") and again in the same mount ("warm"):
#   ls -l of the 10,000-entry folder, find over everything, stat (lstat) of
#   1,000 random paths.
# And for s3cachefs with chunk_size=64K: fio 4 KiB random reads (one pass,
# page cache dropped) of a 16 MiB file whose chunks are cached, with the
# cache holding only its 256 chunks, then with N more chunks (every small
# object read once).
# Prints markdown tables (seconds; IOPS for fio).
#
# Environment: N (objects, default 100000); SYSTEMS (default "ours s3fs
# rclone", "" for none); HIT=0 skips the cache-hit part; OP_TIMEOUT
# (seconds one operation may take, default 300); KEEP=1 keeps the work
# directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../lib/common.sh
source "$repo_root/tools/lib/common.sh"

build_dir=${1:-$repo_root/build}
N=${N:-100000}
SYSTEMS=${SYSTEMS-ours s3fs rclone}
OP_TIMEOUT=${OP_TIMEOUT:-300}
BIG=10000
[ "$N" -gt "$BIG" ] || die "N must be above $BIG"
bin=$build_dir/src/s3cachefs
[ -x "$bin" ] || die "no $bin: build first"
[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts, drop_caches)"

work=$(mktemp -d /tmp/s3cachefs-scale.XXXXXX)
port=$(free_port)
endpoint=http://127.0.0.1:$port
mnt=$work/mnt
mount_pid=
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then
        fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    if [ -n "$mount_pid" ]; then
        kill "$mount_pid" 2>/dev/null || true
    fi
    stop_pidfile "$work/s3rver.pid"
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
unset AWS_CA_BUNDLE # rclone refuses a CA bundle with its own transport

say "filling bucket 'scale' with $N objects in $work/data"
mkdir -p "$work/data/scale" "$mnt"
python3 - "$work/data/scale" "$N" "$BIG" <<'PY'
import hashlib, json, os, sys
root, n, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
meta = json.dumps({"content-type": "application/octet-stream"}, indent=2)
def put(key, body):
    d, _, name = key.rpartition("/")
    path = os.path.join(root, d)
    os.makedirs(path, exist_ok=True)
    base = os.path.join(path, name)
    with open(base + "._S3rver_object", "wb") as f:
        f.write(body)
    with open(base + "._S3rver_object.md5", "w") as f:
        f.write(hashlib.md5(body).hexdigest())
    with open(base + "._S3rver_metadata.json", "w") as f:
        f.write(meta)
keys = [f"big/f{i:05d}" for i in range(big)]
for i in range(n - big):
    keys.append(f"t/d{i // 1000:03d}/s{i // 100 % 10:02d}/f{i % 100:02d}")
for k in keys:
    put(k, f"object {k}\n".encode())
put("hot/file", os.urandom(16 << 20))
with open(os.path.join(root, "..", "..", "keys"), "w") as f:
    f.write("\n".join(keys) + "\n")
PY
start_s3rver "$work/data" "$port" "$work/s3rver.pid" scale
python3 - "$endpoint" "$N" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
n = s3.list_objects_v2(Bucket="scale", Prefix="big/", MaxKeys=5)["KeyCount"]
body = s3.get_object(Bucket="scale", Key="big/f00003")["Body"].read()
assert n == 5 and body == b"object big/f00003\n", (n, body)
PY
raw_ls=$(python3 - "$endpoint" <<'PY'
import sys, time, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
t = time.monotonic()
pages = s3.get_paginator("list_objects_v2").paginate(Bucket="scale", Prefix="big/", Delimiter="/")
n = sum(p["KeyCount"] for p in pages)
assert n == 10000, n
print(f"{time.monotonic() - t:.2f}")
PY
)
say "raw: a delimiter listing of big/ (10 pages, boto3) takes $raw_ls s"
shuf -n 1000 --random-source=<(yes) "$work/keys" | sed "s|^|$mnt/|" >"$work/stat.list"

mount_fs() { # SYSTEM [extra s3cachefs options]
    local sys=$1 extra=${2:-} cache=$work/cache-$1 i
    case $sys in
    ours)
        "$bin" scale "$mnt" -f -o "endpoint=$endpoint,region=us-east-1,path_style,cache_dir=$cache$extra" \
            >>"$work/ours.log" 2>&1 &
        ;;
    s3fs)
        printf '%s:%s\n' S3RVER S3RVER >"$work/passwd-s3fs"
        chmod 600 "$work/passwd-s3fs"
        s3fs scale "$mnt" -f -o "url=$endpoint,use_path_request_style,endpoint=us-east-1,passwd_file=$work/passwd-s3fs,use_cache=$cache" \
            >>"$work/s3fs.log" 2>&1 &
        ;;
    rclone)
        printf '[s]\ntype = s3\nprovider = Other\naccess_key_id = S3RVER\nsecret_access_key = S3RVER\nregion = us-east-1\nendpoint = %s\nforce_path_style = true\n' \
            "$endpoint" >"$work/rclone.conf"
        rclone mount s:scale "$mnt" --config "$work/rclone.conf" --cache-dir "$cache" \
            --vfs-cache-mode full --log-file "$work/rclone.log" --log-level NOTICE &
        ;;
    esac
    mount_pid=$!
    for ((i = 0; i < 600; i++)); do
        mountpoint -q "$mnt" && return 0
        kill -0 "$mount_pid" 2>/dev/null || die "$sys exited before mounting (logs in $work)"
        sleep 0.05
    done
    die "$sys did not mount"
}

umount_fs() {
    fusermount3 -u "$mnt"
    while kill -0 "$mount_pid" 2>/dev/null; do sleep 0.05; done
    mount_pid=
}

# secs OP: run do_OP, print the seconds it took (">T" past OP_TIMEOUT)
secs() {
    local t0 t1
    t0=$(date +%s.%N)
    if ! OP=$1 timeout "$OP_TIMEOUT" bash -c "$(declare -f "do_$1"); do_$1" >/dev/null; then
        echo ">$OP_TIMEOUT"
        return
    fi
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}'
}
# shellcheck disable=SC2012 # counting entries
do_ls() { ls -l "$MNT/big" | wc -l; }
do_find() { find "$MNT" | wc -l; }
do_stat() { python3 -c 'import os,sys; [os.lstat(p.rstrip("\n")) for p in open(sys.argv[1])]' "$STATLIST"; }
export MNT=$mnt STATLIST=$work/stat.list

declare -A res
for sys in $SYSTEMS; do
    if [ "$sys" != ours ] && ! command -v "$sys" >/dev/null; then
        say "$sys not installed: skipped"
        continue
    fi
    for op in ls find stat; do
        rm -rf "$work/cache-$sys"
        mount_fs "$sys"
        res[$sys.$op.cold]=$(secs "$op")
        res[$sys.$op.warm]=$(secs "$op")
        umount_fs
        say "$sys $op: cold ${res[$sys.$op.cold]} s, warm ${res[$sys.$op.warm]} s"
    done
done

fio_hit() { # one pass of 4 KiB random reads over hot/file, page cache dropped
    sync
    echo 3 >/proc/sys/vm/drop_caches
    fio --name=hit --filename="$mnt/hot/file" --rw=randread --bs=4k --size=16M \
        --ioengine=psync --iodepth=1 --output-format=terse --terse-version=3 |
        awk -F';' '{printf "%d", $8}'
}
hit_few=- hit_many=-
if [ "${HIT:-1}" = 1 ] && command -v fio >/dev/null; then
    say "cache hits: 256 chunks cached"
    rm -rf "$work/cache-ours"
    mount_fs ours ",chunk_size=64K,meta_ttl=1h"
    cat "$mnt/hot/file" >/dev/null
    hit_few=$(fio_hit)
    say "cache hits: reading $N small objects into the cache"
    sed "s|^|$mnt/|" "$work/keys" | xargs -d '\n' -P 8 -n 64 cat >/dev/null
    hit_many=$(fio_hit)
    chunks=$(find "$work/cache-ours" -type f | wc -l)
    say "hot/file cached chunks: $(getfattr --absolute-names --only-values -n user.s3cachefs.cached_chunks "$mnt/hot/file" 2>&1)"
    umount_fs
    say "cache hits: $hit_few IOPS with 256 chunks, $hit_many IOPS with $chunks files in the cache"
fi

echo
echo "## Scaling: $N objects, loopback s3rver, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
echo
echo "| system | ls -l 10,000 cold | warm | find $N cold | warm | stat 1,000 cold | warm |"
echo "|---|---:|---:|---:|---:|---:|---:|"
echo "| raw LIST (boto3) | $raw_ls s | | | | | |"
for sys in $SYSTEMS; do
    [ -n "${res[$sys.ls.cold]:-}" ] || continue
    echo "| $sys | ${res[$sys.ls.cold]} s | ${res[$sys.ls.warm]} s | ${res[$sys.find.cold]} s | ${res[$sys.find.warm]} s | ${res[$sys.stat.cold]} s | ${res[$sys.stat.warm]} s |"
done
echo
echo "| s3cachefs cache hit, fio 4 KiB random, one pass | IOPS |"
echo "|---|---:|"
echo "| 256 chunks in the cache | $hit_few |"
echo "| + $N more chunks | $hit_many |"
