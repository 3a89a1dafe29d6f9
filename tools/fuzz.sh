#!/usr/bin/env bash
# tools/fuzz.sh: build the libFuzzer targets (clang, ASan+UBSan) and run
# each for a while, two at a time.  New inputs go to .fuzz/TARGET/ (not
# committed); a finding stops that target and leaves its crash-* file there.
# Ends with one line per target: runs, coverage and whether it found
# anything; exits 1 when any target did.
#
#   tools/fuzz.sh                  every target, 600 s each
#   SECONDS_EACH=60 tools/fuzz.sh xml keys
#
# The normal suite replays each committed corpus (tests/fuzz/corpus/*); to
# keep a finding as a regression test, copy its input there.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

each=${SECONDS_EACH:-600}
case $each in '' | *[!0-9]*)
    echo "fuzz.sh: SECONDS_EACH must be a number of seconds, not '$each'" >&2
    exit 2
    ;;
esac
all=(xml creds options sigv4 keys)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [ -f "$repo_root/tests/fuzz/fuzz_$t.c" ] || {
        echo "fuzz.sh: no fuzz target '$t' (have: ${all[*]})" >&2
        exit 2
    }
done

install_deps
CC=clang build build-fuzz -Dwerror=true -Dfuzzers=true \
    -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

fuzz_one() {
    local t=$1 dir="$repo_root/.fuzz/$1"
    mkdir -p "$dir/new"
    "$repo_root/build-fuzz/tests/fuzz/fuzz_$t" -max_total_time="$each" \
        -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$dir/" "$dir/new" \
        "$repo_root/tests/fuzz/corpus/$t" >"$dir/run.log" 2>&1
}

status=0
pids=()
names=()
for t in "${targets[@]}"; do
    fuzz_one "$t" &
    pids+=($!)
    names+=("$t")
    if [ ${#pids[@]} -eq 2 ]; then
        for i in 0 1; do wait "${pids[$i]}" || status=1; done
        pids=()
    fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done

for t in "${names[@]}"; do
    log="$repo_root/.fuzz/$t/run.log"
    done_line=$(grep -a '^Done ' "$log" | tail -1 || true)
    cov=$(grep -ao 'cov: [0-9]*' "$log" | tail -1 || true)
    if compgen -G "$repo_root/.fuzz/$t/crash-*" >/dev/null ||
        compgen -G "$repo_root/.fuzz/$t/leak-*" >/dev/null ||
        compgen -G "$repo_root/.fuzz/$t/timeout-*" >/dev/null; then
        echo "fuzz $t: FINDING (see .fuzz/$t/run.log)"
        status=1
    else
        echo "fuzz $t: ${done_line:-no summary} ${cov:+($cov)}, no finding"
    fi
done
exit $status
