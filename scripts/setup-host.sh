#!/usr/bin/env bash
# Installs the host packages Berth and its tests need. Idempotent: installs only what is
# missing, and runs `apt-get update` at most once, only if something is missing.
#   libseccomp-dev   seccomp for the shim (libcontainer links libseccomp)
#   nftables iptables  NAT and port publishing (netd)
#   docker-registry  the real distribution registry the e2e tests push to and pull from
#   busybox-static   the e2e test image's only binary
#   skopeo           pushes the e2e test image into the registry
#   prometheus       the observability test scrapes Berth's metrics with the real thing
#   procps           `ps`, which `docker top` runs (as dockerd does)
#   tini             its static build is the init of `docker run --init` (Docker ships tini)
#   openssl          the e2e registry token server signs its JWTs with the openssl CLI
#   docker-compose   Debian's compose (1.29), driven against Berth by the e2e tests
#   python3-venv curl  the docker-py suite's venv (docker-py and pytest from PyPI), and
#                    its readiness checks
#   systemd          only for `systemd-analyze verify` of deploy/systemd (if missing)
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host.sh: must run as root (try: sudo bash scripts/setup-host.sh)" >&2
    exit 1
fi

packages=(libseccomp-dev nftables iptables docker-registry busybox-static skopeo prometheus procps tini openssl python3-venv curl docker-compose)
if ! command -v systemd-analyze >/dev/null 2>&1; then
    packages+=(systemd)
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg -s "$p" >/dev/null 2>&1; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-host: all host packages present"
    exit 0
fi

echo "setup-host: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Debian's docker-registry package starts a registry on :5000 with auth enabled; Berth's
# tests run their own on loopback, so the packaged one must not hold the port.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
