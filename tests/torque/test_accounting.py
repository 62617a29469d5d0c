"""What Torque counts for a job run through cbatch is what it counts natively.

Without a cgroups build, pbs_mom counts an adopted container by sampling its processes;
cbatch-keeper holds the job's CPU times until that last sample (cbatch/keeper.py).
"""

from __future__ import annotations

import pytest

from tests.harness import torque

pytestmark = [pytest.mark.docker, pytest.mark.torque]
# a fixed amount of work (about 8 s of one CPU here), shorter than nothing pbs_mom polls
BURN = "#!/bin/bash\ni=0; while ((i < 6000000)); do ((i++)); done; echo done\n"


def run(submit) -> dict[str, str]:
    job = submit(BURN)
    info = job.wait(timeout=180)
    assert info["exit_status"] == "0" and job.output("o") == "done\n"
    return job.accounting()


def test_cpu_time_is_counted_as_natively(mom, node, submit):
    mom.use(False)
    native = run(submit)
    mom.use(True)
    contained = run(submit)
    cput_native = torque.parse_duration(native["resources_used.cput"])
    cput = torque.parse_duration(contained["resources_used.cput"])
    assert cput_native >= 3, native
    assert abs(cput - cput_native) <= max(1, 0.1 * cput_native), (native, contained)
    assert torque.mem_kb(contained["resources_used.mem"]) > 0, contained
