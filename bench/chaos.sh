#!/usr/bin/env bash
# The long chaos run: ten minutes (BERTH_CHAOS_SECS) of mixed docker work while a random
# service is killed with kill -9 every 2-4 s. Prints operations, kills, failures by kind
# and losses (the test fails on any loss, leak, hang or non-503 error). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
cargo build --workspace --bins
log="${TMPDIR:-/tmp}/berth-chaos-$(date +%s).log"
echo "full output: $log"
set +e
BERTH_CHAOS_SECS="${BERTH_CHAOS_SECS:-600}" \
    cargo test -p berth-e2e --test chaos -- --nocapture >"$log" 2>&1
rc=$?
sed -n '/^chaos figures/,/^test result/p' "$log" | grep -v "^   *[0-9]*: \|^             at "
exit $rc
