"""The checks that make a peer a Torque job, on real files in a temporary PBS_HOME."""

import os
from pathlib import Path

import pytest

from cbatch import config
from cbatch.batch import proc_facts, torque
from cbatch.errors import NotABatchJob


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
    ("{jobs}/5.vm15203.SC\n", "5.vm", 1, "5.vm15203.SC"),  # a multi-mom node's name
])
def test_script_path_from_stdin(home, line, job_id, task, name):
    jobs = torque.jobs_dir(home)
    path = torque._script_path(cfg(home), line.format(jobs=jobs).encode(), job_id)
    assert path == jobs / name


def test_a_tm_tasks_files_are_its_own_pbs_moms(home):
    """On a multi-mom node each pbs_mom names the job's files by its manager port, which
    its TM tasks carry as PBS_MOMPORT; on a plain node the names are the job's prefix."""
    jobs = torque.jobs_dir(home)
    jobs.mkdir(parents=True, exist_ok=True)
    assert torque._own_prefix(jobs, "9[3].vm", {"PBS_MOMPORT": "15003"}) == "9-3.vm"
    (jobs / "9-3.vm15103.JB").write_text("")
    assert torque._own_prefix(jobs, "9[3].vm", {"PBS_MOMPORT": "15103"}) == "9-3.vm15103"
    assert torque._own_prefix(jobs, "9[3].vm", {"PBS_MOMPORT": "15203"}) == "9-3.vm"


@pytest.mark.parametrize("line,job_id", [
    ("/tmp/5.vm.SC\n", "5.vm"),  # outside mom_priv/jobs
    ("{jobs}/../jobs2/5.vm.SC\n", "5.vm"),
    ("{jobs}/6.vm.SC\n", "5.vm"),  # another job's script
    ("{jobs}/5.vm.sh\n", "5.vm"),
    ("\n", "5.vm"),
])
def test_stdin_naming_anything_else_is_refused(home, line, job_id):
    with pytest.raises(NotABatchJob, match="stdin does not name this job's script"):
        torque._script_path(cfg(home), line.format(jobs=torque.jobs_dir(home)).encode(), job_id)


def test_script_must_be_a_regular_file_of_the_user_not_a_symlink(home, tmp_path):
    script = torque.jobs_dir(home) / "5.vm.SC"
    uid = os.getuid()
    assert torque.read_script(script, uid).startswith("#!/bin/bash")
    with pytest.raises(NotABatchJob, match="not a regular file owned by you"):
        torque.read_script(script, uid + 1)
    link = torque.jobs_dir(home) / "7.vm.SC"
    link.symlink_to(script)
    with pytest.raises(NotABatchJob, match="cannot open the job script 7.vm.SC"):
        torque.read_script(link, uid)
    fifo = torque.jobs_dir(home) / "8.vm.SC"
    os.mkfifo(fifo)
    with pytest.raises(NotABatchJob, match="not a regular file"):
        torque.read_script(fifo, uid)


def test_limits_and_environment_parse_as_the_kernel_writes_them():
    limits = proc_facts.parse_limits(Path("/proc/self/limits").read_text())
    assert set(limits) >= {"cpu", "fsize", "nofile", "stack", "as", "rss"}
    assert all(isinstance(s, int) and isinstance(h, int) for s, h in limits.values())
    env = proc_facts.parse_environ(b"A=1\0B=x=y\0broken\0=nokey\0")
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
    expected = PolicyDenied if refused else NotABatchJob  # past the uid check: not a job
    with pytest.raises(expected):
        torque.verify(cfg_, who, ["/bin/bash"], b"")



class FakeProc:
    """A /proc with just the processes a test describes."""

    def __init__(self, root: Path, cwd: Path):
        self.root, self.cwd = root, cwd

    def add(self, pid, comm, ppid, session, tty=0, uid=1001, env=None):
        d = self.root / str(pid)
        d.mkdir(parents=True)
        rest = ["S", ppid, session, session, tty] + [0] * 14 + [100 + pid]
        (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(map(str, rest)) + "\n")
        (d / "status").write_text(f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nUmask:\t0077\n")
        (d / "environ").write_bytes(b"".join(f"{k}={v}\0".encode()
                                             for k, v in (env or {}).items()))
        (d / "limits").write_text(Path("/proc/self/limits").read_text())
        (d / "cwd").symlink_to(self.cwd)


INTERACTIVE_ENV = {"PBS_JOBID": "5.vm", "PBS_ENVIRONMENT": "PBS_INTERACTIVE", "PBS_TASKNUM": "1"}
PTS = 34816  # /dev/pts/0 as tty_nr


def interactive_tree(tmp_path, leader_uid=0, tty=PTS, env=INTERACTIVE_ENV) -> Path:
    """pbs_mom (1000) -> root session leader (2000, on the pty) -> starter (2001)."""
    proc = FakeProc(tmp_path / "proc", tmp_path)
    proc.add(1000, "pbs_mom", 1, 1000, uid=0)
    proc.add(2000, "pbs_mom", 1000, 2000, tty=PTS, uid=leader_uid)
    proc.add(2001, "cbatch-starter", 2000, 2000, tty=tty, env=env)
    return proc.root


def verify_starter(home, proc_root, stdin=b"", tty=True):
    """verify() of pid 2001 as this test's own uid (root, so root jobs are allowed)."""
    from cbatch.peer import describe
    who = describe(2001, os.getuid(), os.getgid(), proc_root)
    cfg_ = config.parse({"torque": {"home": str(home)}, "jobs": {"allow_root": True}})
    return torque.verify(cfg_, who, ["/bin/bash"], stdin, tty=tty, proc=proc_root)


def test_the_interactive_shape_is_a_job_without_a_script(home, tmp_path):
    (torque.jobs_dir(home) / "5.vm.SC").unlink()  # qsub -I without a script
    job = verify_starter(home, interactive_tree(tmp_path))
    assert job.interactive and job.script is None and job.script_text == ""
    assert job.job_id == "5.vm" and job.prefix == "5.vm"


def test_the_interactive_shape_reads_directives_from_the_script_given_to_qsub(home, tmp_path):
    job = verify_starter(home, interactive_tree(tmp_path))
    assert job.interactive and "#CBATCH image=el9" in job.script_text


@pytest.mark.parametrize("tree,tty,reason", [
    ({"leader_uid": 1001}, True, "not a job's session leader"),  # a job's own child
    ({"tty": 0}, True, "not a job's session leader"),  # no terminal
    ({}, False, "terminal does not match"),  # says batch, is shaped interactive
    ({"env": {"PBS_JOBID": "5.vm", "PBS_ENVIRONMENT": "PBS_BATCH"}}, True,
     "terminal does not match"),
])
def test_anything_else_shaped_like_an_interactive_job_is_refused(home, tmp_path, tree, tty,
                                                                 reason):
    with pytest.raises(NotABatchJob, match=reason):
        verify_starter(home, interactive_tree(tmp_path, **tree), tty=tty)


def test_a_batch_job_claiming_a_terminal_is_refused(home, tmp_path):
    proc = FakeProc(tmp_path / "proc", tmp_path)
    proc.add(1000, "pbs_mom", 1, 1000, uid=0)
    proc.add(2001, "cbatch-starter", 1000, 2001, env={"PBS_JOBID": "5.vm"})
    line = f"{torque.jobs_dir(home)}/5.vm.SC\n".encode()
    assert not verify_starter(home, proc.root, line, tty=False).interactive
    with pytest.raises(NotABatchJob, match="terminal does not match"):
        verify_starter(home, proc.root, line, tty=True)
