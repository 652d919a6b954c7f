#!/usr/bin/env bash
# Builds and tests the whole workspace: what CI runs (`.ci/run`). As root with /dev/fuse the
# root integration tests (fs/tests/*.rs) mount real sysvisor-fs servers and make cgroups;
# otherwise they print "skipped: ..." and pass.
#
#   scripts/test.sh [extra cargo test args, e.g. a test name filter]
#
# Steps: install-deps.sh, cargo build, cargo test, cargo clippy (when installed). Exits
# non-zero if any step fails; later steps still run after a test or clippy failure so one
# run shows everything.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || { echo "test.sh: install-deps.sh failed" >&2; exit 1; }
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

# Tests run in parallel: every root integration test uses its own mount point, server and
# uniquely named cgroups.
echo "== cargo test --workspace"
cargo test --workspace "$@" || failed+=("cargo test")

if cargo clippy --version >/dev/null 2>&1; then
    echo "== cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings || failed+=("cargo clippy")
else
    echo "== cargo clippy not installed; skipping lints"
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all passed"
