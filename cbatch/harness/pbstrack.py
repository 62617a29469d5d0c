"""Torque's `pbs_track -j <job id> -a <pid>` as tm_adopt() does it, for nodes without Torque.

It adopts getsid(pid), and only when the caller's uid owns that session's leader
(TM_EPERM otherwise, root included); pid 0 is the caller's own session. The adoption is
recorded in <torque home>/adopted/<job id>, where momsim finds the sessions to signal
with the job (momsim.adopted_sessions). Standard library only, run by its path
(``python3 -I -S pbstrack.py <torque home> -j <job id> -a <pid>``): it starts in a few
milliseconds, as the real pbs_track does, so a job's end waits no longer for it.
"""

from __future__ import annotations

import os
import sys
import time

ADOPTED = "adopted"  # <torque home>/adopted/<job id>: the sessions pbs_track adopted
TM_EPERM = 17008


def pbs_track(torque_home: str, argv: list[str]) -> int:
    args = dict(zip(argv[::2], argv[1::2]))
    job_id, pid = args["-j"], int(args["-a"])
    try:
        sid = os.getsid(pid)
        owner = os.stat(f"/proc/{sid}").st_uid
    except OSError:
        owner = -1
    if owner != os.getuid():
        print(f"pbs_track: permission denied: (null) ({TM_EPERM})", file=sys.stderr)
        return 1
    with open(os.path.join(torque_home, ADOPTED, job_id), "a") as record:
        record.write(f"{sid} {pid} {time.time():.3f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(pbs_track(sys.argv[1], sys.argv[2:]))
