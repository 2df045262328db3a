#!/usr/bin/env bash
# Issue 7's log and event figures: docker logs of 64 MiB (throughput), docker logs
# --tail 10 on a 1 GiB log (BENCH_BIG_MIB to change), docker events latency. Release
# build, hyperfine; set DOCKER_HOST_REF to measure a reference engine side by side.
# Needs root and about 2 GiB of free disk under /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
cargo build --release --workspace --bins
cargo bench -p berth-e2e --bench logs
