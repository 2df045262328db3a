#!/usr/bin/env bash
# README command 1: build Berth and start it on /run/berth/docker.sock (as root).
# Extra arguments go to berthd (e.g. -D, --data-root, -H unix:///var/run/docker.sock).
#
# Debug profile: a release build of the workspace takes several times longer on a small
# machine, and the services are not CPU bound.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-host.sh
cargo build --locked --bins

echo
echo "Starting Berth. Point the docker CLI at it from another shell:"
echo "    export DOCKER_HOST=unix:///run/berth/docker.sock"
echo "(or: docker context create berth --docker host=unix:///run/berth/docker.sock && docker context use berth)"
echo "Stop it with Ctrl-C; running containers keep running."
echo
exec target/debug/berthd "$@"
