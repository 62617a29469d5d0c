#!/usr/bin/env bash
# Build and start a real single-node OpenPBS for the real-OpenPBS test tier (tests/openpbs),
# with the build script and source tarball that ship beside this project (shared/openpbs:
# build-openpbs.sh). It runs beside Torque on other ports (/opt/pbs, /var/spool/pbs).
# Idempotent: an installed build that matches the tarball is only started. Run as root.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# build-openpbs.sh runs apt-get: let it wait for a dpkg lock another installer holds
apt_conf=$(mktemp)
trap 'rm -f "$apt_conf"' EXIT
echo 'DPkg::Lock::Timeout "600";' > "$apt_conf"
export APT_CONFIG=$apt_conf
# The build's smoke job must run natively: a cbatch hook an interrupted test run left
# enabled would send it to a cbatchd that is not there. Turned off before it is deleted (a
# mom running the hook's execjob_end keeps a deleted hook), and one a mom kept after the
# server forgot it is sent again and deleted.
mom_hook=/var/spool/pbs/mom_priv/hooks/cbatch.HK
if [ -x /opt/pbs/bin/qmgr ] && /opt/pbs/bin/qstat -B >/dev/null 2>&1; then
    if /opt/pbs/bin/qmgr -c "list hook cbatch" >/dev/null 2>&1; then
        /opt/pbs/bin/qmgr -c "set hook cbatch enabled=false" || true
        /opt/pbs/bin/qmgr -c "delete hook cbatch" || true
    elif [ -e "$mom_hook" ]; then
        /opt/pbs/bin/qmgr -c "create hook cbatch event=execjob_launch" || true
        /opt/pbs/bin/qmgr -c "delete hook cbatch" || true
    fi
    for _ in $(seq 60); do [ -e "$mom_hook" ] || break; sleep 1; done
fi
for dir in "${CBATCH_OPENPBS_KIT:-}" "$here/../shared/openpbs" /work/shared/openpbs; do
    if [ -n "$dir" ] && [ -x "$dir/build-openpbs.sh" ]; then
        bash "$dir/build-openpbs.sh"
        exit
    fi
done
echo "setup-openpbs: no build-openpbs.sh found; set CBATCH_OPENPBS_KIT to its folder" >&2
exit 1
