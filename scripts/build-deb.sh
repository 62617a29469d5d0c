#!/usr/bin/env bash
# Build cbatch's Debian package from this checkout: dist/cbatch_<version>_<arch>.deb.
# Installs the build dependencies (debian/control's Build-Depends) when missing, builds in
# a scratch copy so the checkout gets no build debris, and prints the .deb's path. Run as
# root on Debian 12 (or as a user whose build dependencies are already installed).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export DEBIAN_FRONTEND=noninteractive

need=()
for pkg in dpkg-dev debhelper dh-python python3-all python3-setuptools python3-wheel pybuild-plugin-pyproject gcc libc6-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# dpkg-buildpackage writes the .deb beside the source tree: build in a copy, without what
# earlier builds or installs left (setuptools never prunes build/lib).
mkdir "$scratch/cbatch"
tar -C "$here" --exclude-vcs --exclude=./build --exclude=./dist --exclude=./.pybuild \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.hypothesis -cf - . | tar -C "$scratch/cbatch" -xf -
# Debian's own tools and python3 only (pybuild runs "python3.11" from PATH: a pyenv or
# /usr/local one would build against its own setuptools).
(cd "$scratch/cbatch" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b) >"$scratch/build.log" 2>&1 || {
    tail -40 "$scratch/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (the end of its log is above)" >&2
    exit 1
}
mkdir -p "$here/dist"
rm -f "$here"/dist/cbatch_*.deb
cp "$scratch"/cbatch_*.deb "$here/dist/"
ls "$here"/dist/cbatch_*.deb
