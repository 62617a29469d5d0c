"""Policy decides on Torque's own record of the job (mom_priv/jobs/<prefix>.JB), so a job
that forges PBS_QUEUE or PBS_NUM_PPN in its environment (qsub -v) gains nothing."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import make_daemon

pytestmark = [pytest.mark.docker, pytest.mark.harness]

SHARES = "#!/bin/bash\necho $PBS_QUEUE $PBS_NUM_PPN\ncat /sys/fs/cgroup/cpu/cpu.shares\n"


@pytest.fixture(scope="module")
def queue_node(image_ids, site_dirs, test_user):
    """beta is only for the queue "special"."""
    d = make_daemon(image_ids, site_dirs, images={"aliases": {
        "alpha": {"ref": image_ids["alpha"]},
        "beta": {"ref": image_ids["beta"], "queues": ["special"]}}})
    d.start()
    forger = d.root / "forging-starter"  # the same process, its environment forged
    forger.write_text(f'#!/bin/sh\nPBS_QUEUE=special PBS_NUM_PPN=256 exec {d.starter} "$@"\n')
    os.chmod(forger, 0o755)
    d.forger = str(forger)
    yield d
    d.cleanup()


def test_a_forged_queue_does_not_open_another_queues_image(queue_node, run):
    result = run("#!/bin/bash\n#CBATCH image=beta\necho ran\n", d=queue_node,
                 starter=queue_node.forger)
    assert result.status == 126 and result.out == ""
    assert result.err == ('cbatch: image "beta" (#CBATCH line 2) is not allowed for you on '
                          "this node; allowed images: alpha\n")


def test_the_queue_torque_recorded_opens_its_image(queue_node, run):
    result = run("#!/bin/bash\n#CBATCH image=beta\ngrep ^ID= /etc/os-release\n",
                 d=queue_node, queue="special")
    assert result.out == "ID=beta\n", result.err


def test_a_forged_ppn_does_not_raise_the_cpu_share(queue_node, run):
    forged = run(SHARES, d=queue_node, starter=queue_node.forger)
    assert forged.out == "special 256\n1024\n", forged.err  # the job sees what it set
    given = run(SHARES, d=queue_node, ppn=2)
    assert given.out == "batch 2\n2048\n", given.err
