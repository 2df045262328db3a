#!/usr/bin/env bash
# The long chaos run: ten minutes (BERTH_CHAOS_SECS) of mixed docker work while a random
# service is killed with kill -9 every 2-4 s. Prints operations, kills, failures by kind
# and losses (the test fails on any loss, leak, hang or non-503 error). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
cargo build --workspace --bins
BERTH_CHAOS_SECS="${BERTH_CHAOS_SECS:-600}" \
    cargo test -p berth-e2e --test chaos -- --nocapture 2>&1 | grep -E "chaos|operations|kills|failures|follower|ticker lines|bad:|test result|panicked"
