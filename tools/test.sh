#!/usr/bin/env bash
# tools/test.sh: install what is missing, build, and run every test: the
# unit tests (meson test, TAP) and the integration tests (pytest against the
# pinned s3rver), first in a gcc build (build/), then again in a clang build
# with AddressSanitizer and UndefinedBehaviorSanitizer (build-san/), then in
# a clang build with ThreadSanitizer (build-tsan/), then each libFuzzer
# target for FUZZ_SECONDS (15) seconds (build-fuzz/).  Every build uses
# -Dwerror=true.  Ends with one line "tests: N passed, N failed" counting
# all the passes run.
#
#   tools/test.sh            every pass (what CI runs)
#   tools/test.sh --quick    the gcc pass only
#   tools/test.sh --tsan     the ThreadSanitizer pass only
#   tools/test.sh --fuzz     the short fuzz runs only
#   PYTEST_ARGS="-k cli"     extra pytest arguments
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

passes="gcc asan tsan fuzz"
case "${1:-}" in
"") ;;
--quick) passes="gcc" ;;
--tsan) passes="tsan" ;;
--fuzz) passes="fuzz" ;;
*) die "usage: tools/test.sh [--quick | --tsan | --fuzz]" ;;
esac
want() { case " $passes " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

install_deps
# Debian's python3 has boto3 and pytest; a python3 earlier on PATH may not.
py=/usr/bin/python3
[ -x "$py" ] || py=python3

total_pass=0
total_fail=0

count_results() {
    # count_results DIR: add meson's and pytest's results of DIR to the totals
    local dir=$1 counts
    counts=$("$py" - "$dir" <<'PY'
import json, sys, xml.etree.ElementTree as ET
d = sys.argv[1]
p = f = 0
try:
    for line in open(f"{d}/meson-logs/testlog.json"):
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            p += 1
        elif r != "SKIP":
            f += 1
except FileNotFoundError:
    f += 1
try:
    root = ET.parse(f"{d}/pytest.xml").getroot()
    for s in ([root] if root.tag == "testsuite" else root.findall("testsuite")):
        n = int(s.get("tests", 0))
        bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped = int(s.get("skipped", 0))
        p += n - bad - skipped
        f += bad
except (FileNotFoundError, ET.ParseError):
    f += 1
print(p, f)
PY
)
    total_pass=$((total_pass + ${counts% *}))
    total_fail=$((total_fail + ${counts#* }))
}

run_pass() {
    # run_pass DIR LABEL: unit then integration tests of the build in DIR
    local dir=$1 label=$2 rc=0
    say "[$label] unit tests"
    meson test -C "$repo_root/$dir" --suite unit --print-errorlogs || rc=1
    say "[$label] integration tests"
    rm -f "$repo_root/$dir/pytest.xml"
    # shellcheck disable=SC2086
    (cd "$repo_root" && S3CACHEFS_BUILD_DIR="$repo_root/$dir" \
        "$py" -m pytest tests/integration -q -ra \
        --junitxml="$repo_root/$dir/pytest.xml" ${PYTEST_ARGS:-}) || rc=1
    count_results "$dir"
    return $rc
}

status=0
if want gcc; then
    build build -Dwerror=true
    run_pass build gcc || status=1
fi

if want asan; then
    CC=clang build build-san -Dwerror=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Dbuildtype=debug
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    S3CACHEFS_SANITIZED=1 run_pass build-san clang+asan+ubsan || status=1
fi

if want tsan; then
    CC=clang build build-tsan -Dwerror=true -Db_sanitize=thread \
        -Db_lundef=false -Dbuildtype=debug
    # Every report reaches the test: the daemon goes on (so one run shows
    # all its races) and exits 66 instead of 0; the tests fail on the
    # "ThreadSanitizer" lines in its log and on the exit status.
    # tests/tsan.supp lists races inside uninstrumented libraries only.
    export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:exitcode=66:second_deadlock_stack=1:suppressions=$repo_root/tests/tsan.supp}
    S3CACHEFS_SANITIZED=1 run_pass build-tsan clang+tsan || status=1
fi

if want fuzz; then
    # The libFuzzer targets, briefly: they build, and a short run over each
    # corpus finds nothing (long runs: tools/fuzz.sh).
    say "[fuzz] each target for ${FUZZ_SECONDS:-15} s"
    fuzz_out=$(SECONDS_EACH=${FUZZ_SECONDS:-15} "$repo_root/tools/fuzz.sh") || status=1
    printf '%s\n' "$fuzz_out"
    total_pass=$((total_pass + $(grep -c ', no finding$' <<<"$fuzz_out" || true)))
    total_fail=$((total_fail + $(grep -c ': FINDING' <<<"$fuzz_out" || true)))
fi

echo "tests: $total_pass passed, $total_fail failed"
exit $status
