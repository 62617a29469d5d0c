"""Plain values for unit tests (no processes, no Docker)."""

from pathlib import Path

from cbatch import config, policy
from cbatch.directives import Directives
from cbatch.peer import Peer
from cbatch.batch import Job

DIGEST = "sha256:" + "c" * 64


def make_job(**overrides) -> Job:
    values = dict(
        job_id="12.vm", prefix="12.vm", task=1, user="alice", uid=1001, gid=1001,
        groups=(1001, 1002), home=Path("/home/alice"), cwd=Path("/home/alice/run"),
        umask=0o077, env={"PBS_JOBID": "12.vm", "PBS_NUM_PPN": "4", "HOME": "/home/alice",
                          "SECRET_TOKEN": "x"},
        argv=("/bin/bash",), stdin=b"/var/spool/torque/mom_priv/jobs/12.vm.SC\n",
        script=Path("/var/spool/torque/mom_priv/jobs/12.vm.SC"), script_text="#!/bin/bash\n",
        queue="batch", rlimits={"nofile": (1024, 4096), "rss": (2 * 2**30, -1)},
        peer=Peer(pid=4242, uid=1001, gid=1001, groups=(1001, 1002), start_ticks=777))
    values.update(overrides)
    return Job(**values)


def make_decision(**settings) -> policy.Decision:
    cfg = config.parse({"images": {"default": "el9", "aliases": {"el9": {"ref": DIGEST}}},
                        **settings})
    return policy.decide(cfg, "alice", frozenset(), "batch", Directives())
