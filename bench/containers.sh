#!/usr/bin/env bash
# Issue 4's container figures: run --rm true (median of 20), 10 in parallel, exec, the
# RSS of an idle shim and of containerd-svc with 50 running containers. Release build,
# hyperfine; set DOCKER_HOST_REF to time a reference engine side by side. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
cargo build --release --workspace --bins
cargo bench -p berth-e2e --bench containers
