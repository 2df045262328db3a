#!/usr/bin/env bash
# README command 2 (and CI's entry point): every gate, in order, as root.
#   host packages, rustfmt, clippy -D warnings, build of every binary, all tests, then
#   docker-py 7.1.0's own integration suite against a private Berth (tests/docker-py)
# Exits non-zero if any gate fails; prints how long each phase took.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: must run as root (the tests create namespaces, bridges and mounts)" >&2
    exit 1
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Tests on 2 cores: let cargo/nextest decide parallelism, but never hang on a prompt.
export DEBIAN_FRONTEND=noninteractive

summary=()
failed=0
phase() {
    local name="$1"
    shift
    echo
    echo "=== ${name}: $*"
    local start=$SECONDS
    if "$@"; then
        summary+=("$(printf '%-8s ok      %4ds' "$name" $((SECONDS - start)))")
    else
        summary+=("$(printf '%-8s FAILED  %4ds' "$name" $((SECONDS - start)))")
        failed=1
        return 1
    fi
}

run_tests() {
    if command -v cargo-nextest >/dev/null 2>&1; then
        cargo nextest run --workspace --locked --no-fail-fast
    else
        cargo test --workspace --locked --no-fail-fast
    fi
}

total_start=$SECONDS
# Later phases are pointless without the host packages or a build; fmt and clippy
# failures still let the build and tests run, so one CI run shows every problem.
phase setup bash scripts/setup-host.sh || { echo "setup failed"; exit 1; }
phase fmt cargo fmt --all -- --check
phase clippy cargo clippy --workspace --all-targets --locked -- -D warnings
if phase build cargo build --workspace --bins --locked; then
    phase tests run_tests
    phase docker-py bash tests/docker-py/run.sh target/debug
fi

echo
echo "=== summary"
for line in "${summary[@]}"; do
    echo "  $line"
done
echo "  total             $((SECONDS - total_start))s"
if [ "$failed" -ne 0 ]; then
    echo "FAILED"
    exit 1
fi
echo "OK"
