#!/usr/bin/env bash
# Prepare a Debian 12 node for cbatch, the way README.rst's install section says: Docker
# (started if not running), a C compiler for the static starter, and cbatch installed
# (not editable) with the system python3 into /usr/local. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
export DEBIAN_FRONTEND=noninteractive

# apt-get waits for a dpkg lock held by another installer (unattended-upgrades, cloud-init)
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
need=()
for pkg in docker.io docker-registry gcc libc6-dev python3-pip; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt_get update -qq
    apt_get install -y -qq "${need[@]}" >/dev/null
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
# Debian's python3 refuses pip installs into /usr/local (PEP 668) unless told so; the
# build compiles the static cbatch-starter and cbatch-keeper from csrc/.
rm -rf build  # setuptools never prunes build/lib: deleted modules would ship again
"$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages \
    --no-warn-script-location --root-user-action=ignore --upgrade '.[test]'
for prog in cbatch-starter cbatch-keeper cbatchd cbatch; do
    [ -x "/usr/local/bin/$prog" ] || { echo "setup-node: /usr/local/bin/$prog missing" >&2; exit 1; }
done
