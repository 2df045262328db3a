#!/usr/bin/env bash
# Issue 6's network figures: run --rm on a user-defined network, embedded DNS latency by
# name, throughput through a published port (and to the container's own address).
# Release build, hyperfine and curl; set DOCKER_HOST_REF to measure a reference engine
# side by side. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
cargo build --release --workspace --bins
cargo bench -p berth-e2e --bench network
