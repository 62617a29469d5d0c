#!/usr/bin/env bash
# Prepare a Debian 12 node for cbatch, the way README.rst's install section says: Docker
# (started if not running), cbatch's Debian package built from this checkout
# (scripts/build-deb.sh) and installed with apt, which brings Debian's own python3-docker,
# -yaml, -structlog and -prometheus-client. Also the test tools, from Debian too. The
# package enables and starts nothing. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1

# apt-get waits for a dpkg lock held by another installer (unattended-upgrades, cloud-init)
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
need=()
for pkg in docker.io docker-registry python3-pytest python3-pytest-mock python3-hypothesis; do
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

deb=$(bash scripts/build-deb.sh | tail -1)
# A cbatch pip-installed into /usr/local by an earlier install would shadow the package's
# modules (/usr/local comes first on python3's path): remove it.
if /usr/bin/python3 -m pip --version >/dev/null 2>&1 \
        && /usr/bin/python3 -m pip show cbatch >/dev/null 2>&1; then
    /usr/bin/python3 -m pip uninstall --quiet --yes --break-system-packages \
        --root-user-action=ignore cbatch
fi
# --reinstall: the version stays 0.1.0 while the checkout changes; an edited
# /etc/cbatch.yaml (a conffile) is kept.
apt_get install -y -qq --reinstall -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "$deb" >/dev/null
for prog in /usr/bin/cbatch-starter /usr/libexec/cbatch/cbatch-keeper /usr/bin/cbatchd \
            /usr/bin/cbatch; do
    [ -x "$prog" ] || { echo "setup-node: $prog missing" >&2; exit 1; }
done
