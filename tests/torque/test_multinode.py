"""Jobs across two nodes (Torque's multi-mom mode on this host: torque-multimom.sh): every
TM task, on the mother superior and on the sister, runs in the job's container."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.harness import torque
from tests.torque.conftest import IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.torque]


@pytest.fixture(scope="module")
def two_nodes(node, mom, tq_image):
    """The cluster as two nodes, pbs_mom on the starter, a cbatchd that gives containers
    the node's pbsdsh; back to one node afterwards."""
    script = torque.kit() / "torque-multimom.sh"
    subprocess.run(["bash", str(script)], check=True, capture_output=True, timeout=300)
    names = torque.multi_mom()
    torque.restart_mom(torque.mom_config(True))
    node.kill()
    multi = torque.CbatchNode({IMAGE: tq_image}, IMAGE,
                              {"container": {"sweep_interval_s": 5},
                               "torque": {"clients": [str(torque.BIN / "pbsdsh")]}})
    multi.start()
    yield names, multi
    multi.cleanup()
    subprocess.run(["bash", str(script), "--undo"], check=True, capture_output=True,
                   timeout=300)
    mom.mode = None  # the single pbs_mom came back with whatever config: set it again
    mom.use(True)
    node.start()


def tasks_of(daemon: torque.CbatchNode, job_id: str) -> list[dict]:
    return [r for r in daemon.events("job_finished") if r["job_id"] == job_id]


def test_pbsdsh_tasks_run_in_the_jobs_image_on_both_nodes(two_nodes, submit):
    names, daemon = two_nodes
    script = ("#!/bin/bash\n"
              "sort -u $PBS_NODEFILE | tr '\\n' ' '; echo\n"
              "pbsdsh -u bash -c 'echo task $PBS_TASKNUM node $PBS_NODENUM "
              "$(grep -h ^ID= /etc/os-release) $(id -un) $(id -G | wc -w)'\n"
              "pbsdsh -n 1 bash -c 'exit 7'\n")
    job = submit(script, "-l", "nodes=2:ppn=1")
    assert job.exit_status(timeout=120) == 0
    out = job.output("o").splitlines()
    assert sorted(out[0].split()) == names
    tasks = sorted(line for line in out[1:] if line.startswith("task "))
    assert len(tasks) == 2, out
    for line in tasks:
        assert f"ID={IMAGE} {job.user.pw_name}" in line, line
    assert {line.split()[3] for line in tasks} == {"0", "1"}  # one task on each node
    assert "task 3 exit status 7" in job.output("e") or "exit status 7" in job.output("e")
    finished = tasks_of(daemon, job.job_id)
    assert len(finished) >= 4  # the top task and three TM tasks, each in a container
    assert {r["image"] for r in finished} == {IMAGE}
