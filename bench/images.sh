#!/usr/bin/env bash
# Issue 3's image figures: docker pull of a 60 MiB, 3-layer image from a loopback
# registry (cold, then with the image present) and imaged's peak RSS. Release build,
# hyperfine; set DOCKER_HOST_REF to time a reference engine side by side. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -qq hyperfine >/dev/null
cargo build --release --workspace --bins
cargo bench -p berth-e2e --bench images
