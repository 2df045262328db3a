#!/usr/bin/env bash
# What tracing costs on `docker run --rm true` (and exec, once it exists): Berth with
# tracing off, on (sampling 1.0, exporting to a real OTLP receiver) and on with an
# unreachable endpoint, side by side in one run. Needs root (it starts Berths) and
# hyperfine (installed here if missing). BENCH_RUNS / BENCH_ROUNDS tune the run length.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
cargo build --release --workspace --bins
cargo bench -p berth-e2e --bench tracing_overhead
