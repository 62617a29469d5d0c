"""What OpenPBS counts for a job run through cbatch, compared with the same job run natively.

Without its cgroup hook, OpenPBS's mom counts a job by sampling the processes of its
sessions every poll; cbatchd has it attach the container's session (pbs_attach -p), and
cbatch-keeper holds the job's CPU times until the mom's last sample. Natively that last
sample finds the job's processes gone: the CPU used since the previous poll is not counted.
Through cbatch it is: resources_used.cput is the CPU the job used.
"""

from __future__ import annotations

import re

import pytest

from tests.harness import openpbs

pytestmark = [pytest.mark.docker]
# a fixed amount of work (some seconds of one CPU); bash's `times` says what it used
BURN = "#!/bin/bash\ni=0; while ((i < 9000000)); do ((i++)); done; echo done; times\n"


def seconds(text: str) -> int:
    h, m, s = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + s


def kb(text: str) -> int:
    return int(text[:-2]) * {"kb": 1, "mb": 1024, "gb": 1024 ** 2}[text[-2:]]


def run(job: openpbs.Job) -> tuple[dict[str, str], float]:
    """(the E record, the CPU seconds the job's shell says it used)."""
    assert job.wait(timeout=240)["Exit_status"] == 0
    out = job.output("o")
    assert out.startswith("done\n"), out
    user, system = (int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s",
                                                                     out.splitlines()[1]))
    return openpbs.wait_for(lambda: openpbs.accounting(job.id), 20, "the E record"), \
        user + system


def test_cput_is_what_the_job_used_and_mem_and_walltime_are_counted(native, submit, node):
    plain, used_native = run(native(BURN))
    ours, used = run(submit(BURN))
    print("native", used_native, {k: v for k, v in plain.items() if "resources_used" in k})
    print("cbatch", used, {k: v for k, v in ours.items() if "resources_used" in k})
    cput = seconds(ours["resources_used.cput"])
    assert used >= 3 and abs(cput - used) <= max(1.5, 0.1 * used), (used, ours)
    # natively, at most what the job used (the CPU since the mom's last poll is lost)
    assert seconds(plain["resources_used.cput"]) <= used_native + 1, (used_native, plain)
    assert seconds(ours["resources_used.walltime"]) >= int(used) - 1, ours
    assert kb(ours["resources_used.mem"]) > 0 and kb(ours["resources_used.vmem"]) > 0, ours
