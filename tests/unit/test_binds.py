"""Which host paths a job's container gets (real temporary files, no Docker)."""

import os
from pathlib import Path

import pytest

from cbatch import binds
from cbatch.errors import PolicyDenied
from tests.unit.factories import make_decision, make_job

ROOTS = (Path("/"),)
TORQUE = Path("/var/spool/torque")


@pytest.mark.parametrize("path,allowed", [
    ("/home/alice", True), ("/tmp", True), ("/scratch/x", True), ("/var/tmp/j", True),
    ("/", False), ("/var", False), ("/etc", False), ("/etc/ssh", False), ("/run/docker", False),
    ("/var/run", False), ("/proc/1", False), ("/usr/lib", False), ("/root", False),
    ("/var/spool/torque/spool", False), ("/var/lib/docker", False),
])
def test_system_folders_never_become_job_folders(path, allowed):
    assert binds.is_job_path(Path(path), ROOTS, TORQUE) is allowed


def test_workdir_roots_narrow_where_jobs_may_run():
    roots = (Path("/home"), Path("/scratch"))
    assert binds.is_job_path(Path("/scratch/a"), roots, TORQUE)
    assert not binds.is_job_path(Path("/tmp"), roots, TORQUE)


def test_working_directory_in_a_system_folder_is_refused():
    with pytest.raises(PolicyDenied, match="working directory /etc cannot be used"):
        binds.resolve(make_job(cwd=Path("/etc"), home=Path("/nonexistent")), make_decision(), TORQUE)


def test_job_gets_its_files_read_only_where_needed(tmp_path):
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    job = make_job(home=home, cwd=home / "run", env={})
    result = {str(b.target): b.read_only for b in binds.resolve(job, make_decision(), TORQUE)}
    assert result == {"/etc/passwd": True, "/etc/group": True, str(home): False,
                      str(job.script): True}  # cwd is inside the home: one mount


def test_tmpdir_is_mounted_only_when_it_is_the_users_real_directory(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    link = tmp_path / "link"
    link.symlink_to(own)
    uid = os.getuid()
    work = tmp_path / "work"
    work.mkdir()
    for value, mounted in ((str(own), True), (str(link), False), ("/root", False),
                           ("relative", False), (str(tmp_path / "missing"), False)):
        job = make_job(uid=uid, home=Path("/nonexistent"), cwd=work, env={"TMPDIR": value})
        targets = {str(b.target) for b in binds.resolve(job, make_decision(), TORQUE)}
        assert (value in targets) is mounted, value
    other = make_job(uid=uid + 1, home=Path("/nonexistent"), cwd=work,
                     env={"TMPDIR": str(own)})
    assert str(own) not in {str(b.target) for b in binds.resolve(other, make_decision(), TORQUE)}


def test_node_files_only_from_torques_aux_folder(tmp_path):
    aux = tmp_path / "aux"
    aux.mkdir()
    (aux / "1.vm").write_text("node\n")
    (tmp_path / "elsewhere").write_text("secret\n")
    job = make_job(home=Path("/nonexistent"), cwd=Path("/tmp"),
                   env={"PBS_NODEFILE": f"{aux}//1.vm", "PBS_GPUFILE": str(tmp_path / "elsewhere")})
    targets = {str(b.target) for b in binds.resolve(job, make_decision(), tmp_path)}
    assert str(aux / "1.vm") in targets and str(tmp_path / "elsewhere") not in targets


def test_missing_site_folder_fails_unless_optional():
    from cbatch.errors import ContainerFailed
    job = make_job(home=Path("/nonexistent"), cwd=Path("/tmp"), env={})
    with pytest.raises(ContainerFailed, match="/nowhere is missing on this node"):
        binds.resolve(job, make_decision(mounts=[{"path": "/nowhere"}]), TORQUE)
    assert binds.resolve(job, make_decision(mounts=[{"path": "/nowhere", "optional": True}]), TORQUE)


def test_output_files_in_system_folders_are_streamed_not_mounted(tmp_path):
    from cbatch import outputs
    with open(tmp_path / "job.OU", "a") as ok, open("/dev/null", "w") as null, \
            open("/etc/hostname") as read_only:
        assert outputs._classify(ok.fileno()).mode == "file"
        assert outputs._classify(null.fileno()).mode == "null"
        assert outputs._classify(read_only.fileno()).mode == "stream"  # not opened for writing
    with open("/proc/self/status") as proc_file:
        assert outputs._classify(proc_file.fileno()).mode == "stream"
    if os.geteuid() != 0:
        return  # only root can make a writable file in a system folder to try it with
    system = Path("/var/lib/cbatch-test-output.OU")  # writable, but in a system folder
    try:
        with open(system, "a") as f:
            assert outputs._classify(f.fileno()).mode == "stream"
    finally:
        system.unlink(missing_ok=True)
