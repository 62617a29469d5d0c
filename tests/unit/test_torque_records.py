"""The queue and slot count come from pbs_mom's root-owned record of the job, never the
job's environment; anything unsafe or unreadable falls back to no queue and one slot."""

import os
import shutil
from pathlib import Path

import pytest

from cbatch import config
from cbatch.batch import torque, torque_records
from cbatch.peer import describe
from tests.unit.test_torque import FakeProc

DATA = Path(__file__).parent / "data"
SERVER_QUEUED = DATA / "torque61-server-queued.JB"  # written by Torque 6.1's pbs_server
# written by Torque 6.1's pbs_mom for qsub -l nodes=1:ppn=2 -v PBS_QUEUE=special,PBS_NUM_PPN=256
MOM_PPN2 = DATA / "torque61-mom-ppn2.JB"


def test_a_record_written_by_torque_gives_its_queue():
    record = torque_records.parse(SERVER_QUEUED.read_bytes(), "0.vm", "vm")
    assert record.queue == "batch"
    assert record.slots == 1 and "exec_host" in record.problem  # queued: no exec_host yet


def test_a_running_jobs_record_gives_its_slots_on_this_node_not_its_variables():
    """Its Variable_List claims PBS_QUEUE=special and PBS_NUM_PPN=256 (qsub -v)."""
    record = torque_records.parse(MOM_PPN2.read_bytes(), "3.vm", "vm")
    assert (record.queue, record.slots, record.problem) == ("batch", 2, None)


@pytest.mark.parametrize("exec_host,node,slots", [
    ("vm/0-1", "vm", 2),
    ("vm/0+vm/1+vm/2", "vm", 3),
    ("vm/0-3,6", "vm", 5),
    ("node7/0-1", "vm", 2),  # one host: this node, whatever pbs_mom calls itself
    ("n1/0-3+vm.example.org/4-5", "vm", 2),  # short names compared
    ("n1/0-3+vm/4-5", "n1.example.org", 4),
    ("n1/0-3+n2/0", "vm", 0),  # not here
    ("", "vm", 0), ("vm", "vm", 0), ("vm/a", "vm", 0), ("vm/3-1", "vm", 0), ("/0", "vm", 0),
])
def test_slots_on_this_node_from_exec_host(exec_host, node, slots):
    assert torque_records.slots_on(exec_host, node) == slots


def _jb(text: str, job_id: str = "3.vm") -> bytes:
    return MOM_PPN2.read_bytes().replace(b"<jobid>3.vm</jobid>", f"<jobid>{job_id}</jobid>".encode()
                                         ).replace(b"vm/0-1", text.encode())


@pytest.mark.parametrize("data,problem", [
    (_jb("vm/0-1", job_id="8.vm"), "not this job's"),
    (b"<job><jobid>3.vm</jobid>", "not XML"),
    (b'<?xml version="1.0"?><!DOCTYPE job [<!ENTITY a "batch">]><job/>', "DTD"),
    (b"<job><jobid>3.vm</jobid></job>", "no attributes"),
    (_jb("vm/0-999999"), None),  # capped, not refused
])
def test_a_record_that_is_not_this_jobs_or_not_sane_gives_least(data, problem):
    record = torque_records.parse(data, "3.vm", "vm")
    if problem is None:
        assert record.slots == torque_records.MAX_SLOTS
    else:
        assert (record.queue, record.slots) == ("", 1) and problem in record.problem


@pytest.fixture
def jobs(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    shutil.copy(MOM_PPN2, folder / "3.vm.JB")
    os.chmod(folder / "3.vm.JB", 0o644)  # as pbs_mom leaves it
    return folder


@pytest.mark.parametrize("tamper,problem", [
    (lambda p: p.unlink(), "cannot open 3.vm.JB"),
    (lambda p: os.chown(p, 1001, -1), "only root may write"),
    (lambda p: os.chmod(p, 0o622), "only root may write"),
    (lambda p: (p.rename(p.with_suffix(".x")), p.symlink_to(p.with_suffix(".x"))),
     "cannot open 3.vm.JB"),
])
def test_a_record_a_user_could_have_written_is_not_believed(jobs, tamper, problem):
    assert torque_records.read(jobs, "3.vm", "3.vm", "vm").slots == 2
    tamper(jobs / "3.vm.JB")
    record = torque_records.read(jobs, "3.vm", "3.vm", "vm")
    assert (record.queue, record.slots) == ("", 1) and problem in record.problem


def test_verify_takes_queue_and_slots_from_the_record_not_the_forged_environment(tmp_path):
    home = tmp_path / "torque"
    folder = torque.jobs_dir(home)
    folder.mkdir(parents=True)
    (folder / "3.vm.SC").write_text("#!/bin/bash\n")
    shutil.copy(MOM_PPN2, folder / "3.vm.JB")
    proc = FakeProc(tmp_path / "proc", tmp_path)
    proc.add(1000, "pbs_mom", 1, 1000, uid=0)
    proc.add(2001, "cbatch-starter", 1000, 2001, uid=os.getuid(),
             env={"PBS_JOBID": "3.vm", "PBS_QUEUE": "special", "PBS_NUM_PPN": "256"})
    cfg = config.parse({"torque": {"home": str(home)}, "jobs": {"allow_root": True}})
    who = describe(2001, os.getuid(), os.getgid(), proc.root)
    job = torque.verify(cfg, who, ["/bin/bash"], f"{folder}/3.vm.SC\n".encode(),
                        proc=proc.root)
    assert (job.queue, job.slots, job.record_problem) == ("batch", 2, None)
    (folder / "3.vm.JB").unlink()
    job = torque.verify(cfg, who, ["/bin/bash"], f"{folder}/3.vm.SC\n".encode(),
                        proc=proc.root)
    assert (job.queue, job.slots) == ("", 1) and "cannot open" in job.record_problem


def test_a_refused_low_uid_is_logged_with_the_job_id_it_claims(tmp_path):
    from cbatch.errors import PolicyDenied
    proc = FakeProc(tmp_path / "proc", tmp_path)
    proc.add(2001, "cbatch-starter", 1000, 2001, uid=0, env={"PBS_JOBID": "9.vm"})
    cfg = config.parse({"torque": {"home": str(tmp_path)}})
    who = describe(2001, 0, 0, proc.root)
    with pytest.raises(PolicyDenied) as refused:
        torque.verify(cfg, who, ["/bin/bash"], b"", proc=proc.root)
    assert refused.value.log_fields()["claimed_job_id"] == "9.vm"
    assert "9.vm" not in str(refused.value)  # the user's line is unchanged


def test_owner_and_hosts_come_from_pbs_moms_record():
    record = torque_records.parse(MOM_PPN2.read_bytes(), "3.vm", "vm")
    assert record.owner and record.hosts == ("vm",)


def test_hosts_in_exec_host_order_each_once():
    assert torque_records.hosts_of("vm2/0+vm1/0-1+vm2/1") == ("vm2", "vm1")
    assert torque_records.hosts_of("") == ()
