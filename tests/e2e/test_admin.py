"""The admin CLI and the demo, as an admin runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import USER, make_daemon

pytestmark = [pytest.mark.docker, pytest.mark.harness]
SAMPLE = Path(__file__).parents[2] / "etc" / "cbatch.yaml"


def cbatch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cbatch.admin", *args], capture_output=True,
                          text=True, timeout=120)


def test_check_config_accepts_the_sample_and_names_errors(tmp_path):
    ok = cbatch("check-config", "--no-docker", str(SAMPLE))  # the sample's images are fictional
    assert ok.returncode == 0 and "ok (2 images, default el9" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("container:\n  network: overlay\n")
    result = cbatch("--config", str(bad), "check-config")
    assert result.returncode == 1
    assert result.stderr == ("cbatch: configuration error at container.network (line 2): must "
                             "be one of host, bridge, none, not 'overlay'\n")



def test_check_config_fails_when_the_default_image_is_not_on_this_node(tmp_path, image_ids):
    here, absent = image_ids["alpha"], "reg.invalid/hep/gone@sha256:" + "0" * 64
    path = tmp_path / "cbatch.yaml"
    for pull in ("never", "missing"):
        path.write_text(f'images:\n  pull: {pull}\n  default: gone\n  aliases:\n'
                        f'    gone: {{ref: "{absent}"}}\n    alpha: {{ref: "{here}"}}\n')
        result = cbatch("check-config", str(path))
        if pull == "never":
            assert result.returncode == 1
            assert result.stderr == (
                f"cbatch: configuration error at images.default: gone ({absent}) is not on "
                "this node and images.pull is never: load it, or run `cbatch images pull` "
                "with pull: missing\n")
        else:  # the first job (or `cbatch images pull`) fetches it: usable, and said so
            assert result.returncode == 0, result.stderr
            assert "the default image gone is not on this node yet" in result.stdout
    path.write_text(path.read_text().replace("default: gone", "default: alpha"))
    assert cbatch("check-config", str(path)).returncode == 0
    assert cbatch("check-config", "--no-docker", str(path).replace("cbatch", "x")).stderr \
        .startswith("cbatch: configuration error at ")

def test_demo_runs_a_job_through_starter_daemon_and_docker(test_user, api):
    had_image = bool(api.images(name="cbatch-demo"))
    result = cbatch("demo", "--user", test_user.pw_name)
    if not had_image:  # the demo built it: tests remove what they make
        api.remove_image("cbatch-demo:latest", force=True)
    assert result.returncode == 0, result.stderr
    assert "hello from job 1.demo" in result.stdout
    assert f"user: uid={test_user.pw_uid}({USER})" in result.stdout
    assert f"cwd:  /home/{USER}   umask: 0077   args: first second" in result.stdout
    assert "exit_status=3" in result.stdout
    # a newcomer sees the script, the image, the container and the daemon's account
    out = result.stdout
    assert "#CBATCH image=demo\n" in out and "alias demo -> sha256:" in out
    assert re.search(r"cbatch-1\.demo, id [0-9a-f]{12}, removed", out), out
    assert re.search(r"os:   cbatch-demo   programs in /usr/bin: \d\d\n", out) or \
        "the site's default" in out, out
    assert re.search(r"^job_finished: .*exit_status=3", out, re.M), out
    assert re.search(r"^container_removed: ", out, re.M), out


def test_health_is_silent_when_good_and_one_error_line_when_not(daemon):
    good = cbatch("--config", str(daemon.config_path), "health", "--min-free-gb", "0")
    assert (good.returncode, good.stdout) == (0, "")
    stopped = cbatch("--config", str(daemon.root / "none.yaml"), "health")
    assert stopped.stdout.startswith("ERROR cbatch: configuration error")
    assert stopped.stdout.count("\n") == 1


def test_health_reports_a_missing_default_image(image_ids, site_dirs, test_user):
    d = make_daemon(image_ids, site_dirs)
    settings = dict(d.settings)
    settings["images"] = {"default": "gone", "aliases": {"gone": {"ref": "sha256:" + "0" * 64}}}
    d.write_config(settings)
    d.start()
    try:
        result = cbatch("--config", str(d.config_path), "health", "--min-free-gb", "0")
        assert result.stdout.startswith("ERROR cbatch: default image gone (sha256:000")
    finally:
        d.cleanup()


def test_missing_image_is_a_node_side_failure_for_the_job(image_ids, site_dirs, test_user, run):
    d = make_daemon(image_ids, site_dirs)
    settings = dict(d.settings)
    settings["images"]["aliases"]["gone"] = {"ref": "sha256:" + "0" * 64}
    d.write_config(settings)
    d.start()
    try:
        result = run("#!/bin/bash\n#CBATCH image=gone\necho ran\n", d=d)
        assert result.status == 125 and result.out == ""
        assert result.err.startswith("cbatch: the job's image is not available on this node")
        record = d.wait_for_event("job_failed", job_id=result.job.spec.job_id)
        assert record["error"] == "ImageUnavailable" and record["image"] == "gone"
    finally:
        d.cleanup()


def test_ps_and_kill_through_the_daemon_for_root(submit, daemon):
    job = submit("#!/bin/bash\nsleep 60\n")
    daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    listing = cbatch("--config", str(daemon.config_path), "ps")
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if line.startswith(job.spec.job_id))
    assert USER in line and "alpha" in line and "running" in line
    killed = cbatch("--config", str(daemon.config_path), "kill", job.spec.job_id, "--signal", "TERM")
    assert killed.returncode == 0 and "sent SIGTERM to 1 container" in killed.stdout
    assert job.wait(30) == 143  # the job's shell died of a TERM that pbs_mom did not send


def test_admin_operations_are_refused_to_job_users(daemon, test_user):
    code = ("import socket, sys; from cbatch import protocol; s = socket.socket(socket.AF_UNIX); "
            f"s.connect({str(daemon.socket)!r}); protocol.send(s, 'admin', op='ps'); "
            "print(protocol.recv(s)[0])")
    result = subprocess.run(["setpriv", f"--reuid={test_user.pw_uid}", f"--regid={test_user.pw_gid}",
                             "--init-groups", "/usr/bin/python3", "-c", code], capture_output=True,
                            text=True, cwd="/", timeout=30)
    assert "admin operations are for root and the admin group only" in result.stdout, result.stderr
    record = daemon.wait_for_event("job_refused", error="AdminRefused", uid=test_user.pw_uid)
    assert record["op"] == "ps"


def test_health_reports_low_image_disk(daemon):
    result = cbatch("--config", str(daemon.config_path), "health", "--min-free-gb", "1000000")
    assert result.stdout.startswith("ERROR cbatch: only ") and "GiB free for images" in result.stdout


def test_systemd_unit_is_valid(tmp_path):
    import shutil
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # as the tree has it: its programs are the installed package's (/usr/bin)
    unit = (Path(__file__).parents[2] / "systemd" / "cbatchd.service").read_text()
    (tmp_path / "cbatchd.service").write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "cbatchd.service")],
                            capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "cbatchd.service" in line]
    assert not problems, problems


def test_health_says_error_when_the_daemon_accepts_but_does_not_answer(daemon):
    import os as os_
    import signal as signal_
    os_.kill(daemon.proc.pid, signal_.SIGSTOP)  # wedged: the socket still accepts
    try:
        result = cbatch("--config", str(daemon.config_path), "health", "--min-free-gb", "0")
        assert result.stdout.startswith("ERROR cbatch: cbatchd is not answering")
    finally:
        os_.kill(daemon.proc.pid, signal_.SIGCONT)


def test_ps_falls_back_to_docker_when_the_daemon_is_down(fresh_daemon, submit):
    fresh_daemon.start()
    job = submit("#!/bin/bash\nsleep 30\n", d=fresh_daemon)
    fresh_daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    fresh_daemon.stop(__import__("signal").SIGKILL)
    listing = cbatch("--config", str(fresh_daemon.config_path), "ps")
    assert listing.returncode == 0 and "listing from Docker directly" in listing.stderr
    assert any(line.startswith(job.spec.job_id) for line in listing.stdout.splitlines())
    fresh_daemon.start()  # the job resumes; end it
    job.qdel(0.5)
    assert job.wait(30) == 271
