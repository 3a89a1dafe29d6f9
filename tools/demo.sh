#!/usr/bin/env bash
# tools/demo.sh: the main job on a new machine.  Installs what is missing,
# builds, starts a local S3-compatible server with a sample bucket on
# loopback, runs a round trip through it, and prints what to try.
# tools/demo.sh stop: stops the server it started.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

state="$repo_root/.demo"
pidfile="$state/s3rver.pid"

if [ "${1:-}" = stop ]; then
    stop_pidfile "$pidfile"
    say "demo server stopped"
    exit 0
fi

install_deps
build build -Dwerror=true
cli="$repo_root/build/tools/s3cachefs-s3"

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

cat <<TXT

The server keeps running (pid $(cat "$pidfile")).  Try:
    export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
    export S3CACHEFS_ENDPOINT=$S3CACHEFS_ENDPOINT
    build/tools/s3cachefs-s3 ls s3://demo
    build/tools/s3cachefs-s3 get "s3://demo/notes/table 1.csv"
    build/tools/s3cachefs-s3 put README.md s3://demo/README.md
    build/tools/s3cachefs-s3 -vv stat s3://demo/hello.txt
    build/tools/s3cachefs-s3 --help
Stop it with: tools/demo.sh stop
TXT
