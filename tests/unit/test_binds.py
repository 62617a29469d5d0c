"""Which host paths a job's container gets (real temporary files, no Docker)."""

import os
import shutil
import tempfile
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


@pytest.fixture
def place():
    """A folder every uid can search (pytest's tmp_path sits behind a 0700 parent)."""
    path = Path(tempfile.mkdtemp(prefix="cbatch-binds-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def resolve(job, decision=None, torque=TORQUE) -> dict[str, binds.Bind]:
    """The binds by target; the descriptors are closed at once."""
    mounts = binds.resolve(job, decision or make_decision(), torque)
    try:
        return {str(b.target): b for b in mounts.binds}
    finally:
        mounts.release()


def test_working_directory_in_a_system_folder_is_refused():
    with pytest.raises(PolicyDenied, match="working directory /etc cannot be used"):
        resolve(make_job(cwd=Path("/etc"), home=Path("/nonexistent")))


def test_job_gets_its_files_read_only_where_needed(place):
    home = place / "home"
    (home / "run").mkdir(parents=True)
    job = make_job(home=home, cwd=home / "run", env={})
    result = {target: b.read_only for target, b in resolve(job).items()}
    assert result == {"/etc/passwd": True, "/etc/group": True, str(home): False,
                      str(job.script): True}  # cwd is inside the home: one mount


def test_the_jobs_own_folders_are_held_open_until_released(place):
    (place / "run").mkdir()
    mounts = binds.resolve(make_job(home=Path("/nonexistent"), cwd=place / "run", env={}),
                           make_decision(), TORQUE)
    fd = mounts.fds[place / "run"]
    assert os.readlink(f"/proc/self/fd/{fd}") == str(place / "run")
    assert set(mounts.fds) == {place / "run"}  # site and system files go by name
    mounts.release()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_a_working_directory_swapped_for_a_symlink_is_refused(place):
    (place / "real").mkdir()
    (place / "run").symlink_to(place / "real")
    with pytest.raises(PolicyDenied) as caught:
        resolve(make_job(home=Path("/nonexistent"), cwd=place / "run", env={}))
    assert str(caught.value) == (
        f"the job's working directory {place}/run cannot be used in its container "
        f"({place}/run is a symbolic link); submit from a plain folder of yours and leave it "
        "in place until the job has started")


@pytest.mark.skipif(os.geteuid() != 0, reason="makes folders of another uid")
def test_a_working_directory_behind_another_users_0700_folder_is_refused(place):
    private = place / "private"
    (private / "open").mkdir(parents=True)
    os.chown(private, 54322, 54322)
    os.chmod(private, 0o700)
    with pytest.raises(PolicyDenied, match=f"{private} is closed to uid 1001"):
        resolve(make_job(home=Path("/nonexistent"), cwd=private / "open", env={}))


def test_a_working_directory_gone_since_the_job_started_is_not_mounted(place):
    job = make_job(home=Path("/nonexistent"), cwd=place / "gone", env={})
    assert str(place / "gone") not in resolve(job)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts placeholders")
def test_pinned_folder_stays_the_checked_one_when_its_name_is_swapped(place):
    """The race: the name is swapped for a symlink after the check; Docker gets the
    placeholder, which still holds the folder that was checked."""
    (place / "run").mkdir()
    (place / "run" / "mine").write_text("own\n")
    (place / "secret").mkdir()
    (place / "secret" / "marker").write_text("secret\n")
    job = make_job(home=Path("/nonexistent"), cwd=place / "run", env={})
    mounts = binds.resolve(job, make_decision(), TORQUE)
    os.rename(place / "run", place / "moved")
    (place / "run").symlink_to(place / "secret")
    run_dir = place / "placeholders"
    try:
        mounts.pin(run_dir, "cbatch-12.vm")
        source = next(b.source for b in mounts.binds if b.target == place / "run")
        assert source.parent == run_dir
        assert sorted(os.listdir(source)) == ["mine"]
    finally:
        mounts.release()
    assert list(run_dir.iterdir()) == []  # placeholders unmounted and removed


def test_tmpdir_is_mounted_only_when_it_is_the_users_real_directory(place):
    own = place / "own"
    own.mkdir()
    link = place / "link"
    link.symlink_to(own)
    uid = os.getuid()
    work = place / "work"
    work.mkdir()
    for value, mounted in ((str(own), True), (str(link), False), ("/root", False),
                           ("relative", False), (str(place / "missing"), False),
                           (f"{work}/../own", False)):
        job = make_job(uid=uid, home=Path("/nonexistent"), cwd=work, env={"TMPDIR": value})
        assert (value in resolve(job)) is mounted, value
    other = make_job(uid=uid + 1, home=Path("/nonexistent"), cwd=work,
                     env={"TMPDIR": str(own)})
    assert str(own) not in resolve(other)


def test_node_files_only_from_torques_aux_folder(place):
    aux = place / "aux"
    aux.mkdir()
    (aux / "1.vm").write_text("node\n")
    (place / "elsewhere").write_text("secret\n")
    job = make_job(home=Path("/nonexistent"), cwd=Path("/tmp"),
                   env={"PBS_NODEFILE": f"{aux}//1.vm", "PBS_GPUFILE": str(place / "elsewhere")})
    targets = resolve(job, torque=place)
    assert str(aux / "1.vm") in targets and str(place / "elsewhere") not in targets


def test_missing_site_folder_fails_unless_optional():
    from cbatch.errors import NodeIncomplete
    job = make_job(home=Path("/nonexistent"), cwd=Path("/tmp"), env={})
    with pytest.raises(NodeIncomplete, match="/nowhere is missing on this node"):
        resolve(job, make_decision(mounts=[{"path": "/nowhere"}]))
    assert resolve(job, make_decision(mounts=[{"path": "/nowhere", "optional": True}]))


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
