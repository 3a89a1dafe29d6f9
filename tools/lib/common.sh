# shellcheck shell=bash
# Shared by tools/demo.sh and tools/test.sh: install what is missing, build,
# and run the pinned test server.  Sourced, not run.

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say() { printf '==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (install sudo or run as root)"
    fi
}

# Debian packages the build, the tests and the demo need.
deb_packages=(
    build-essential clang meson ninja-build pkg-config
    libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev libsqlite3-dev
    zlib1g-dev libexpat1-dev attr
    python3 python3-pytest python3-boto3 ca-certificates openssl
)

install_deps() {
    local missing=() p
    for p in "${deb_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    # Node.js runs the S3 test server; keep one that is already there.
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    if [ ! -d "$repo_root/tests/s3rver/node_modules/s3rver" ]; then
        say "installing the pinned S3 test server (npm ci in tests/s3rver)"
        (cd "$repo_root/tests/s3rver" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

# build DIR [meson options...]: configure once, then build.
build() {
    local dir=$1
    shift
    if [ ! -f "$repo_root/$dir/build.ninja" ]; then
        say "configuring $dir: $*"
        meson setup "$repo_root/$dir" "$repo_root" "$@" >/dev/null
    fi
    say "building $dir"
    ninja -C "$repo_root/$dir" >/dev/null || ninja -C "$repo_root/$dir"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_s3rver DATA_DIR PORT PIDFILE BUCKET...: run the test server in the
# background and wait until it answers.
start_s3rver() {
    local data=$1 port=$2 pidfile=$3
    shift 3
    local args=() b i
    for b in "$@"; do args+=(--configure-bucket "$b"); done
    mkdir -p "$data"
    NODE_OPTIONS="${NODE_OPTIONS:-} --openssl-legacy-provider" \
        nohup node -r "$repo_root/tests/s3rver/fixes.js" \
        "$repo_root/tests/s3rver/node_modules/s3rver/bin/s3rver.js" \
        -d "$data" -a 127.0.0.1 -p "$port" --silent "${args[@]}" \
        >"$data.log" 2>&1 &
    echo $! >"$pidfile"
    for i in $(seq 1 200); do
        if python3 - "$port" <<'PY' 2>/dev/null; then return 0; fi
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
PY
        kill -0 "$(cat "$pidfile")" 2>/dev/null || die "the S3 test server exited: see $data.log"
        [ "$i" = 200 ] && die "the S3 test server did not answer on port $port"
        sleep 0.1
    done
}

stop_pidfile() {
    local pidfile=$1 pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$pidfile"
}
