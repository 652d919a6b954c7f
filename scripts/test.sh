#!/usr/bin/env bash
# Builds and tests the whole workspace: what CI runs (`.ci/run`). As root with /dev/fuse the
# root integration tests (fs/tests/*.rs) mount real sysvisor-fs servers and make cgroups.
#
#   scripts/test.sh [extra cargo test args, e.g. a test name filter]
#
# Steps: install-deps.sh (everything the tests need, before any runs), cargo build, cargo
# test, e2e, fmt, clippy, bench smoke, fuzz smoke (fuzz/, when cargo-fuzz is installed or
# installable). Exits non-zero if any step fails; later steps still run after a test,
# clippy or fuzz failure so one run shows everything.
#
# Skips that show: a test that cannot run here (not root, no /dev/fuse, a kernel feature
# missing, ...) records itself and why in $SYSVISOR_SKIP_DIR (the sysvisor-skip crate; this
# script's own steps do the same), and the run ends with the list. With CI=true a skip of
# something a CI machine must have (root, /dev/fuse, an installed tool) fails the run;
# skips of what a correct machine may lack (FUSE over io_uring, a second CPU, a cgroup
# controller) or of what was turned off on purpose (SYSVISOR_E2E=skip) are listed only.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || { echo "test.sh: install-deps.sh failed" >&2; exit 1; }

SYSVISOR_SKIP_DIR="$(mktemp -d /tmp/sysvisor-skips.XXXXXX)"
export SYSVISOR_SKIP_DIR
trap 'rm -rf "$SYSVISOR_SKIP_DIR"' EXIT

# record_skip STEP KIND REASON: a skipped step of this script, listed with the tests'
# skips (KIND: required or optional, as in the sysvisor-skip crate).
record_skip() {
    echo "== $1: skipped ($3)"
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$SYSVISOR_SKIP_DIR/skips-test.sh.tsv"
}

# The list of skips, and under CI=true a failure if one is required.
report_skips() {
    local records
    records="$(cat "$SYSVISOR_SKIP_DIR"/*.tsv 2>/dev/null | sort -u)"
    if [ -z "$records" ]; then
        echo "== skipped: none"
        return 0
    fi
    echo "== skipped: $(printf '%s\n' "$records" | wc -l) (test, required/optional, why)"
    printf '%s\n' "$records" | awk -F'\t' '{ printf "   %s [%s]: %s\n", $1, $2, $3 }'
    case "${CI:-}" in
        true | TRUE | True | 1)
            if printf '%s\n' "$records" | awk -F'\t' '$2 == "required" { found = 1 } END { exit !found }'; then
                echo "test.sh: CI=true: a required test was skipped (see [required] above)" >&2
                failed+=("required skips")
            fi
            ;;
    esac
}
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

failed=()

echo "== cargo build --workspace --all-targets"
if ! cargo build --workspace --all-targets; then
    echo "test.sh: build failed" >&2
    exit 1
fi

# --no-fail-fast: a failing test binary must not hide the results of the others. Tests run
# in parallel: every root integration test uses its own mount point, server and
# uniquely named cgroups.
echo "== cargo test --workspace"
cargo test --workspace --exclude sysvisor-e2e --no-fail-fast "$@" || failed+=("cargo test")

# That pass served the fs integration tests over the default transport (auto: FUSE over
# io_uring where the kernel has it, which transport.rs also checks explicitly). Where it
# does, the /dev/fuse transport gets its own pass so both stay tested.
if [ "$(id -u)" = 0 ] && [ -e /sys/module/fuse/parameters/enable_uring ]; then
    echo "== cargo test -p sysvisor-fs, fs integration tests over /dev/fuse (SYSVISOR_FS_TRANSPORT=epoll)"
    SYSVISOR_FS_TRANSPORT=epoll cargo test -p sysvisor-fs --test transport --test limits \
        --test robustness --test daemon --test reread --test own_files --no-fail-fast "$@" \
        || failed+=("cargo test (epoll transport)")
fi

# ---- e2e -------------------------------------------------------------------------------
# End-to-end tests against a real Docker engine (tests/, crate sysvisor-e2e): as root they
# run a private dockerd (its own socket, data root and bridge) with the freshly built
# sysvisor-runc and their own sysvisor-fs daemon (its own socket, mount point and state);
# otherwise they record a skip. SYSVISOR_E2E=skip skips them. Containers mostly wait: 4
# test threads.
echo "== e2e: cargo test -p sysvisor-e2e"
RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}" cargo test -p sysvisor-e2e --no-fail-fast "$@" || failed+=("e2e")
# ---- end of e2e ------------------------------------------------------------------------

if cargo fmt --version >/dev/null 2>&1; then
    echo "== cargo fmt --all --check"
    cargo fmt --all --check || failed+=("cargo fmt")
else
    record_skip "cargo fmt" required "rustfmt is not installed (rustup component add rustfmt)"
fi

if cargo clippy --version >/dev/null 2>&1; then
    echo "== cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings || failed+=("cargo clippy")
else
    record_skip "cargo clippy" required "clippy is not installed (rustup component add clippy)"
fi

# ---- bench smoke -----------------------------------------------------------------------
# One short pass of each scenario of the benchmark harness (bench/, docs/benchmarks.md) so
# it cannot rot: every "read" cell for 0.2 s against native /proc, LXCFS (installed when
# missing) and sysvisor-fs; "many" with 5 containers for 0.5 s per window; "lifecycle" with
# 2 runs per runtime on the e2e crate's private dockerd (skipped with SYSVISOR_E2E=skip);
# "memory" with 0 and 5 registered containers. Asserts no timings, only that each runs and
# every read and container succeeds (about 40 s). Needs root and /dev/fuse;
# SYSVISOR_BENCH=skip skips it.
bench_smoke() {
    if [ "${SYSVISOR_BENCH:-}" = skip ]; then
        record_skip "bench smoke" optional "SYSVISOR_BENCH=skip"
        return 0
    fi
    if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
        record_skip "bench smoke" required "needs root and /dev/fuse"
        return 0
    fi
    if ! cargo build -q -p sysvisor-fs -p sysvisor-runc -p sysvisor-bench; then
        failed+=("bench smoke build")
        return 0
    fi
    # No waiting for a quiet machine, no retaken windows: a smoke pass measures nothing. A
    # target that cannot start (lxcfs) is recorded as a skip (failing CI=true).
    local bench=(target/debug/sysvisor-bench --quiet-wait 0)
    echo "== bench smoke: read --seconds 0.2"
    timeout 120 "${bench[@]}" read --seconds 0.2 || failed+=("bench smoke read")
    echo "== bench smoke: many --count 5 --seconds 0.5"
    timeout 120 "${bench[@]}" many --count 5 --seconds 0.5 --retries 0 || failed+=("bench smoke many")
    if [ "${SYSVISOR_E2E:-}" = skip ]; then
        record_skip "bench smoke lifecycle" optional "SYSVISOR_E2E=skip"
    else
        echo "== bench smoke: lifecycle --runs 2"
        timeout 300 "${bench[@]}" lifecycle --runs 2 || failed+=("bench smoke lifecycle")
    fi
    echo "== bench smoke: memory --containers 0,5"
    timeout 60 "${bench[@]}" memory --containers 0,5 || failed+=("bench smoke memory")
}
bench_smoke
# ---- end of bench smoke ----------------------------------------------------------------

# ---- fuzz smoke ------------------------------------------------------------------------
# Builds the cargo-fuzz targets in fuzz/ (a standalone crate, see fuzz/README.md) and runs
# each for SYSVISOR_FUZZ_SECS seconds (default 3; 0 skips) on its seeds and saved
# regressions; a crash or a build failure fails the run. cargo-fuzz is installed when
# missing; if that is impossible the step is skipped with the reason. The build goes to
# SYSVISOR_FUZZ_TARGET_DIR (default ~/.cache/sysvisor-fuzz-target) so that a machine that
# ran it before only rebuilds what changed. Nightly flags: RUSTC_BOOTSTRAP=1 on stable.
fuzz_smoke() {
    local secs="${SYSVISOR_FUZZ_SECS:-3}"
    local target_dir="${SYSVISOR_FUZZ_TARGET_DIR:-${HOME:-/tmp}/.cache/sysvisor-fuzz-target}"
    if [ "$secs" = 0 ]; then
        record_skip "fuzz smoke" optional "SYSVISOR_FUZZ_SECS=0"
        return 0
    fi
    if ! command -v c++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
        record_skip "fuzz smoke" required "no C++ compiler to build libFuzzer"
        return 0
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "== fuzz smoke: installing cargo-fuzz"
        local log
        log="$(mktemp)"
        if ! cargo install cargo-fuzz --locked >"$log" 2>&1; then
            tail -n 5 "$log" >&2
            rm -f "$log"
            record_skip "fuzz smoke" required "cargo-fuzz is not installed and 'cargo install cargo-fuzz --locked' failed"
            return 0
        fi
        rm -f "$log"
    fi
    local fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
    echo "== fuzz smoke: cargo fuzz build (target dir $target_dir)"
    if ! "${fuzz[@]}" build --fuzz-dir fuzz --target-dir "$target_dir"; then
        failed+=("fuzz build")
        return 0
    fi
    local targets
    targets="$("${fuzz[@]}" list --fuzz-dir fuzz)" || { failed+=("fuzz list"); return 0; }
    local scratch
    scratch="$(mktemp -d)"
    local t
    for t in $targets; do
        # The first directory receives new inputs: a scratch one, so seeds stay as committed.
        local dirs=("$scratch/$t" "fuzz/seeds/$t")
        mkdir -p "$scratch/$t"
        [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
        if "${fuzz[@]}" run --fuzz-dir fuzz --target-dir "$target_dir" "$t" "${dirs[@]}" -- \
            -max_total_time="$secs" -timeout=10 -print_final_stats=0 >"$scratch/$t.log" 2>&1; then
            echo "   fuzz $t: ok ($(grep -o 'Done [0-9]* runs' "$scratch/$t.log" | tail -n 1))"
        else
            # The panic or sanitizer report, then where the crashing input was saved.
            grep -E -A4 "panicked at|==ERROR|ERROR: libFuzzer|^SUMMARY" "$scratch/$t.log" | head -n 40 >&2
            grep -A10 "^Failing input" "$scratch/$t.log" >&2 || tail -n 20 "$scratch/$t.log" >&2
            echo "   fuzz $t: FAILED (crash input under fuzz/artifacts/$t/)" >&2
            failed+=("fuzz $t")
        fi
    done
    rm -rf "$scratch"
}
fuzz_smoke
# ---- end of fuzz smoke -----------------------------------------------------------------

report_skips

if [ "${#failed[@]}" -gt 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all passed"
