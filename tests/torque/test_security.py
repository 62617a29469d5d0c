"""A job owner's attacks through real Torque: the environment qsub -v hands to pbs_mom's
exec of the installed starter never runs code on the host, and policy inputs come from
Torque's own records, not from that environment."""

from __future__ import annotations

import pytest

from tests.harness import attacker as attack
from tests.harness import torque

pytestmark = [pytest.mark.docker, pytest.mark.torque]


@pytest.fixture(scope="module")
def kit(tq_user):
    built = attack.build(tq_user)
    yield built
    attack.remove(tq_user)


@pytest.mark.parametrize("vector", attack.VECTORS)
def test_qsub_v_environment_never_runs_code_on_the_host(cbatch, submit, tq_user, kit, vector):
    env = attack.arm(kit, tq_user, vector)
    try:
        assert attack.fires_on_host(kit, tq_user, env, attack.VECTORS[vector][1]), \
            f"the {vector} kit did not fire on the host"
        variables = ",".join(f"{k}={v}" for k, v in env.items())
        job = submit("#!/bin/bash\ngrep -h ^ID= /etc/os-release\n",
                     *(["-v", variables] if variables else []))
        assert job.exit_status() == 0
        assert job.output("o") == "ID=torque-tier\n"  # it ran, in its container
        # pbs_mom's own copy of the .o/.e files runs `cp` as the user with the job's
        # environment, natively too: Torque's, not the job starter's (README, threat model)
        assert [line for line in attack.host_marks(kit["marker"])
                if " /usr/bin/cp " not in line] == []
    finally:
        attack.disarm(kit)


def test_a_forged_slot_count_gives_no_more_cpu_weight(cbatch, submit, tq_api):
    """The CPU weight comes from Torque's record of the job (mom_priv/jobs/<id>.JB: 1
    slot), whatever the job's environment was asked to hold."""
    job = submit("#!/bin/bash\necho $PBS_NUM_PPN\nsleep 30\n", "-v", "PBS_NUM_PPN=256")
    record = cbatch.wait_for_event("container_started", job_id=job.job_id)
    shares = tq_api.inspect_container(record["container_id"])["HostConfig"]["CpuShares"]
    torque.qdel(job.job_id)
    assert shares == 1024
    job.wait()
