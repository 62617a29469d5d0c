#!/usr/bin/env bash
# Build and start a real single-node Torque 6.1 for the real-Torque test tier (tests/torque),
# with the build script and source tarball that ship beside this project (shared/torque:
# build-torque.sh). Idempotent: an installed Torque is only started. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# build-torque.sh runs apt-get: let it wait for a dpkg lock another installer holds
apt_conf=$(mktemp)
trap 'rm -f "$apt_conf"' EXIT
echo 'DPkg::Lock::Timeout "600";' > "$apt_conf"
export APT_CONFIG=$apt_conf
# the multi-node tests run an MPI program (Debian's MPICH) across two pbs_moms
if ! dpkg -s mpich libmpich-dev >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mpich libmpich-dev >/dev/null
fi
for dir in "${CBATCH_TORQUE_KIT:-}" "$here/../shared/torque" /work/shared/torque; do
    if [ -n "$dir" ] && [ -x "$dir/build-torque.sh" ]; then
        bash "$dir/build-torque.sh"
        exit
    fi
done
echo "setup-torque: no build-torque.sh found; set CBATCH_TORQUE_KIT to its folder" >&2
exit 1
