"""The checks that make a peer a Torque job, on real files in a temporary PBS_HOME."""

import os
from pathlib import Path

import pytest

from cbatch import config, torque
from cbatch.errors import NotATorqueJob


@pytest.fixture
def home(tmp_path):
    jobs = tmp_path / "mom_priv" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "5.vm.SC").write_text("#!/bin/bash\n#CBATCH image=el9\n")
    return tmp_path


def cfg(home):
    return config.parse({"torque": {"home": str(home)}})


@pytest.mark.parametrize("line,job_id,task,name", [
    ("{jobs}/5.vm.SC\n", "5.vm", 1, "5.vm.SC"),
    ("exec {jobs}/5.vm.SC a1 \"b 2\"\n", "5.vm", 1, "5.vm.SC"),
    ("", "5.vm", 2, "5.vm.SC"),  # a TM task: no stdin, the job's own script
    ("", "9[3].vm", 2, "9-3.vm.SC"),
])
def test_script_path_from_stdin_or_job_id(home, line, job_id, task, name):
    jobs = torque.jobs_dir(home)
    path = torque._script_path(cfg(home), line.format(jobs=jobs).encode(), job_id, task)
    assert path == jobs / name


@pytest.mark.parametrize("line,job_id", [
    ("/tmp/5.vm.SC\n", "5.vm"),  # outside mom_priv/jobs
    ("{jobs}/../jobs2/5.vm.SC\n", "5.vm"),
    ("{jobs}/6.vm.SC\n", "5.vm"),  # another job's script
    ("{jobs}/5.vm.sh\n", "5.vm"),
    ("\n", "5.vm"),
])
def test_stdin_naming_anything_else_is_refused(home, line, job_id):
    with pytest.raises(NotATorqueJob, match="stdin does not name this job's script"):
        torque._script_path(cfg(home), line.format(jobs=torque.jobs_dir(home)).encode(), job_id, 1)


def test_script_must_be_a_regular_file_of_the_user_not_a_symlink(home, tmp_path):
    script = torque.jobs_dir(home) / "5.vm.SC"
    uid = os.getuid()
    assert torque._read_script(script, uid).startswith("#!/bin/bash")
    with pytest.raises(NotATorqueJob, match="not a regular file owned by you"):
        torque._read_script(script, uid + 1)
    link = torque.jobs_dir(home) / "7.vm.SC"
    link.symlink_to(script)
    with pytest.raises(NotATorqueJob, match="cannot open the job script 7.vm.SC"):
        torque._read_script(link, uid)
    fifo = torque.jobs_dir(home) / "8.vm.SC"
    os.mkfifo(fifo)
    with pytest.raises(NotATorqueJob, match="not a regular file"):
        torque._read_script(fifo, uid)


def test_limits_and_environment_parse_as_the_kernel_writes_them():
    limits = torque._parse_limits(Path("/proc/self/limits").read_text())
    assert set(limits) >= {"cpu", "fsize", "nofile", "stack", "as", "rss"}
    assert all(isinstance(s, int) and isinstance(h, int) for s, h in limits.values())
    env = torque._parse_environ(b"A=1\0B=x=y\0broken\0=nokey\0")
    assert env == {"A": "1", "B": "x=y"}
    assert torque.prefix_of("12[4].vm") == "12-4.vm"


@pytest.mark.parametrize("uid,settings,refused", [
    (0, {}, True), (999, {}, True), (1000, {}, False),
    (1500, {"jobs": {"min_uid": 2000}}, True),
    (0, {"jobs": {"allow_root": True}}, False),
])
def test_root_and_system_uids_are_refused_unless_allowed(uid, settings, refused, tmp_path):
    from cbatch.errors import PolicyDenied
    from cbatch.peer import Peer
    cfg_ = config.parse({"torque": {"home": str(tmp_path)}, **settings})
    who = Peer(pid=2**22 + 7, uid=uid, gid=uid, groups=(), start_ticks=1)  # no such process
    expected = PolicyDenied if refused else NotATorqueJob  # past the uid check: not a job
    with pytest.raises(expected):
        torque.verify(cfg_, who, ["/bin/bash"], b"")
