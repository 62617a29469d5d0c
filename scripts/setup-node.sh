#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine for cbatch: Docker engine (started if not running),
# the Python dependencies, and cbatch itself. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# docker.io: the engine; docker-registry: a loopback registry the tests pull digests from
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker-registry >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io docker-registry >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
        systemctl start docker
    else
        (setsid dockerd >/var/log/dockerd.log 2>&1 &)
    fi
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "setup-node: dockerd did not start" >&2; exit 1; }
fi
pip_install() { python3 -m pip install --quiet --disable-pip-version-check "$@"; }
# Debian's own python3 refuses pip installs (PEP 668) unless told this is intended
pip_install -e '.[test]' 2>/dev/null || pip_install --break-system-packages -e '.[test]'
