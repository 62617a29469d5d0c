"""A job's folders are mounted as the objects that were checked; its writes outside its
mounts are bounded. Through the pbs_mom harness, a real cbatchd and Docker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import USER, make_daemon
from tests.harness import swapper

pytestmark = [pytest.mark.docker, pytest.mark.harness]

MARKER = "SECRET-MARKER-cbatch"
JOBS, WAVE = 50, 10


@pytest.fixture
def secret():
    """A world-readable marker behind a root-only (0700) folder, like Torque's
    server_priv/accounting: no job user may reach it."""
    top = Path("/srv/cbatch-race-secret")
    (top / "inside").mkdir(parents=True, exist_ok=True)
    os.chmod(top, 0o700)
    os.chmod(top / "inside", 0o755)
    (top / "inside" / "marker").write_text(MARKER + "\n")
    yield top / "inside"
    shutil.rmtree(top)


@pytest.fixture
def race_dir(test_user):
    """The owner's folder outside their home (as /scratch would be): the working
    directory then gets a mount of its own."""
    base = Path(tempfile.mkdtemp(prefix="cbatch-race-", dir="/tmp"))
    os.chmod(base, 0o755)
    os.chown(base, test_user.pw_uid, test_user.pw_gid)
    yield base
    shutil.rmtree(base)


def test_swapping_the_working_directory_with_a_symlink_never_mounts_the_target(
        submit, daemon, test_user, secret, race_dir):
    """50 jobs whose -d folder the owner keeps exchanging (renameat2) with a symlink to a
    folder they cannot reach: each job sees its own folder or is refused in one line."""
    swap = subprocess.Popen([sys.executable, "-I", "-c", Path(swapper.__file__).read_text()],
                            user=test_user.pw_uid, group=test_user.pw_gid, extra_groups=[],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    results = []
    began = time.monotonic()
    try:
        for wave in range(0, JOBS, WAVE):
            jobs = []
            for n in range(wave, wave + WAVE):
                work, link = race_dir / f"w{n}", race_dir / f"l{n}"
                work.mkdir()
                (work / "mine").write_text(f"own {n}\n")
                link.symlink_to(secret)
                for path in (work, work / "mine", link):
                    os.chown(path, test_user.pw_uid, test_user.pw_gid, follow_symlinks=False)
                job = submit("#!/bin/bash\ncat mine marker 2>/dev/null; true\n",
                             initdir=str(work))
                swap.stdin.write(f"{job.starter_pid} {work} {link}\n")
                swap.stdin.flush()
                jobs.append((n, job))
            for n, job in jobs:
                status = job.wait(60)
                results.append((n, status, *job.output()))
        swap.stdin.write("stop\n")
        swap.stdin.flush()
        swaps = int(swap.stdout.readline())
    finally:
        swap.kill()
        swap.communicate()  # reaps it and closes its pipes
    elapsed = time.monotonic() - began
    leaks = [r for r in results if MARKER in r[2] or MARKER in r[3]]
    assert leaks == []
    refused = 0
    for n, status, out, err in results:
        if status == 0:
            assert out == f"own {n}\n" and err == "", (n, out, err)
            continue
        assert status == 126 and out == "" and err.count("\n") == 1, (n, status, out, err)
        assert err.startswith(f"cbatch: the job's working directory {race_dir}/") and (
            "is a symbolic link); submit from a plain folder of yours" in err), err
        refused += 1
    print(f"{JOBS} jobs in {elapsed:.1f} s, {swaps} exchanges, {refused} refused, 0 leaks")
    assert swaps > JOBS  # the owner really was swapping while the jobs started


@pytest.fixture(scope="module")
def small_tmp_daemon(image_ids, site_dirs, test_user):
    d = make_daemon(image_ids, site_dirs, container={"tmp_size": "64m",
                                                     "sweep_interval_s": 3600})
    d.start()
    yield d
    d.cleanup()


def _docker_used_bytes() -> int:
    vfs = os.statvfs("/var/lib/docker")
    return (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize


def test_a_job_filling_its_tmp_gets_enospc_and_one_cbatch_line(run, small_tmp_daemon):
    before = _docker_used_bytes()
    script = ("#!/bin/bash\ndd if=/dev/zero of=/tmp/big bs=1M count=256 2>&1 | "
              "grep -o 'No space left on device' | head -1\necho dd-done\n")
    result = run(script, d=small_tmp_daemon)
    grown = _docker_used_bytes() - before
    assert result.status == 0
    assert result.out == "No space left on device\ndd-done\n"
    assert result.err == ("cbatch: the job filled its /tmp and /var/tmp (64 MiB limit on this "
                          "node); write large files to $TMPDIR or your working directory\n")
    assert grown < 64 * 2**20, grown  # the 256 MiB never reached Docker's storage
    record = small_tmp_daemon.wait_for_event("tmp_filled", job_id=result.job.spec.job_id)
    assert record["limit_bytes"] == 64 * 2**20 and record["user"] == USER


def test_small_tmp_files_cwd_and_home_are_writable_and_the_image_is_not(run, race_dir,
                                                                        test_user):
    work = race_dir / "work"
    work.mkdir()
    os.chown(work, test_user.pw_uid, test_user.pw_gid)
    script = ("#!/bin/bash\necho hi > /tmp/small && cat /tmp/small\n"
              "echo v > /var/tmp/v && cat /var/tmp/v\n"
              "echo c > in-cwd && echo cwd-ok\necho h > ~/in-home && echo home-ok\n"
              "touch /in-image 2>&1 | grep -o 'Read-only file system'\n"
              "touch /usr/in-image 2>&1 | grep -o 'Read-only file system'\n")
    result = run(script, initdir=str(work))
    assert result.out == ("hi\nv\ncwd-ok\nhome-ok\nRead-only file system\n"
                          "Read-only file system\n"), result.err
    assert result.err == "" and result.status == 0
    assert (work / "in-cwd").read_text() == "c\n"
    (Path(test_user.pw_dir) / "in-home").unlink()


def test_each_jobs_tmp_is_its_own_and_removed_with_it(run, daemon):
    first = run("#!/bin/bash\necho one > /tmp/left-behind; ls /tmp | grep -c left-behind\n")
    second = run("#!/bin/bash\nls /tmp | grep -c left-behind; true\n")
    assert (first.out, second.out) == ("1\n", "0\n"), (first.err, second.err)
    run_dir = daemon.socket.parent / "out"
    deadline = time.monotonic() + 10  # the session removes it after the starter has gone
    while any(p.name.endswith(".tmp") for p in run_dir.glob("*")):
        assert time.monotonic() < deadline, list(run_dir.glob("*"))
        time.sleep(0.1)
    assert f"{run_dir}/" not in Path("/proc/self/mounts").read_text()
