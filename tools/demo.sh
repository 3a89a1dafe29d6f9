#!/usr/bin/env bash
# tools/demo.sh: the main job on a new machine.  Installs what is missing,
# builds, starts a local S3-compatible server with a sample bucket on
# loopback, mounts the bucket with s3cachefs, shows a cold read, a warm read
# and the cache's size, and prints what to try.
# tools/demo.sh stop: unmounts and stops what it started, by PID.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

state="$repo_root/.demo"
pidfile="$state/s3rver.pid"
fspidfile="$state/s3cachefs.pid"
mnt="$state/mnt"

# unmount_demo: unmount the demo mount and wait for its daemon to exit
unmount_demo() {
    if mountpoint -q "$mnt" 2>/dev/null; then
        fusermount3 -u "$mnt" || fusermount3 -u -z "$mnt" || true
    fi
    stop_pidfile "$fspidfile"
}

# ms: milliseconds since the epoch
ms() { date +%s%3N; }

if [ "${1:-}" = stop ]; then
    unmount_demo
    stop_pidfile "$pidfile"
    say "demo mount and server stopped"
    exit 0
fi

install_deps
build build -Dwerror=true
cli="$repo_root/build/tools/s3cachefs-s3"

unmount_demo
stop_pidfile "$pidfile"
mkdir -p "$state"
port=$(free_port)
start_s3rver "$state/data" "$port" "$pidfile" demo
echo "http://127.0.0.1:$port" >"$state/endpoint"

export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
export S3CACHEFS_ENDPOINT="http://127.0.0.1:$port"

say "sample bucket 'demo' at $S3CACHEFS_ENDPOINT"
sample="$state/sample"
mkdir -p "$sample/notes"
printf 'hello from s3cachefs\n' >"$sample/hello.txt"
printf 'a,b,c\n1,2,3\n' >"$sample/notes/table.csv"
head -c $((24 << 20)) /dev/urandom >"$sample/random.bin"
"$cli" put "$sample/hello.txt" s3://demo/hello.txt
"$cli" put --content-type text/csv "$sample/notes/table.csv" "s3://demo/notes/table 1.csv"
"$cli" -o multipart_threshold=8M,part_size=8M put "$sample/random.bin" s3://demo/data/random.bin

say "listing (ls -r s3://demo):"
"$cli" ls -r s3://demo
say "round trip of a 24 MiB multipart object:"
"$cli" get s3://demo/data/random.bin "$state/random.back"
if cmp -s "$sample/random.bin" "$state/random.back"; then
    echo "    byte-exact ($(sha256sum <"$state/random.back" | cut -c1-16)...)"
else
    die "round trip differs"
fi
"$cli" stat s3://demo/data/random.bin

# mount_demo: mount s3://demo on $mnt in the background, wait for the mount
mount_demo() {
    "$repo_root/build/src/s3cachefs" demo "$mnt" -f \
        -o cache_dir="$state/cache",cache_size=1G,cache_min_free=0,log_level=info \
        >>"$state/s3cachefs.log" 2>&1 </dev/null &
    echo $! >"$fspidfile"
    for _ in $(seq 100); do
        mountpoint -q "$mnt" && return 0
        kill -0 "$(cat "$fspidfile")" 2>/dev/null ||
            die "s3cachefs did not start: $(tail -n 1 "$state/s3cachefs.log")"
        sleep 0.1
    done
    die "s3cachefs did not mount $mnt"
}

say "mounting s3://demo on $mnt (cache in $state/cache, capped at 1G)"
mkdir -p "$mnt"
rm -rf "$state/cache" "$state/s3cachefs.log"
mount_demo
ls -lR "$mnt"

sha_src=$(sha256sum <"$sample/random.bin" | cut -c1-16)
t0=$(ms)
sha_cold=$(sha256sum <"$mnt/data/random.bin" | cut -c1-16)
t1=$(ms)
unmount_demo
mount_demo
t2=$(ms)
sha_warm=$(sha256sum <"$mnt/data/random.bin" | cut -c1-16)
t3=$(ms)
if [ "$sha_cold" != "$sha_src" ] || [ "$sha_warm" != "$sha_src" ]; then
    die "data read through the mount differs from what was uploaded"
fi
say "24 MiB read through the mount, byte-exact ($sha_src...):"
echo "    cold read, from S3:                     $((t1 - t0)) ms"
echo "    warm read, from the cache after remount: $((t3 - t2)) ms"
echo "    cache on disk: $(du -sh "$state/cache" | cut -f1) in $(find "$state/cache/chunks" -type f | wc -l) chunk files"

cat <<TXT

The server and the mount keep running (server pid $(cat "$pidfile"),
s3cachefs pid $(cat "$fspidfile"), log in .demo/s3cachefs.log).  Try:
    ls -l .demo/mnt .demo/mnt/notes
    cat ".demo/mnt/notes/table 1.csv"
    dd if=.demo/mnt/data/random.bin bs=1M skip=7 count=3 | sha256sum
    du -sh .demo/cache; ls .demo/cache/chunks | head
    getfattr -d .demo/mnt/data/random.bin       # what the cache holds of it
    build/tools/s3cachefs-ctl -C .demo/cache stats   # statistics, live
    build/tools/s3cachefs-ctl ls .demo/mnt
    export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
    export S3CACHEFS_ENDPOINT=$S3CACHEFS_ENDPOINT
    build/tools/s3cachefs-s3 ls -r s3://demo
    build/src/s3cachefs --help
Stop both with: tools/demo.sh stop
TXT
