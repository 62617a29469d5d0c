"""The daemon's own life: who it refuses, restarts, orphans, reloads."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import USER, job_spec

pytestmark = [pytest.mark.docker, pytest.mark.harness]


def test_a_process_that_is_not_a_torque_job_is_refused(daemon, test_user):
    """An ssh login on the node running the starter by hand gets one line, no container."""
    proc = subprocess.run(
        ["setpriv", f"--reuid={test_user.pw_uid}", f"--regid={test_user.pw_gid}",
         "--init-groups", "setsid", "--wait", daemon.starter, "/bin/bash"],
        input=f"{daemon.torque_home}/mom_priv/jobs/1.vm.SC\n", capture_output=True, text=True,
        env={"CBATCH_SOCKET": str(daemon.socket), "PBS_JOBID": "1.vm", "PATH": "/bin"})
    assert proc.returncode == 126 and proc.stdout == ""
    assert proc.stderr == ("cbatch: cbatch-starter must be started by pbs_mom as a Torque job "
                           "(its parent is not pbs_mom)\n")
    record = daemon.wait_for_event("job_refused", error="NotATorqueJob", uid=test_user.pw_uid)
    assert record["parent"] != "pbs_mom"


def test_root_jobs_are_refused_by_default(daemon):
    proc = subprocess.run(["setsid", "--wait", daemon.starter, "/bin/bash"], input="x\n",
                          capture_output=True, text=True,
                          env={"CBATCH_SOCKET": str(daemon.socket), "PATH": "/bin"})
    assert proc.returncode == 126
    assert proc.stderr.startswith("cbatch: jobs of uid 0 may not run in containers")


def test_killed_daemon_fails_the_job_cleanly_and_restart_removes_the_orphan(fresh_daemon, submit, api):
    fresh_daemon.start()
    job = submit("#!/bin/bash\necho started\nsleep 300\n", d=fresh_daemon)
    fresh_daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    fresh_daemon.stop(signal.SIGKILL)
    assert job.wait(30) == 125
    out, err = job.output()
    assert out == "started\n"
    assert err.startswith("cbatch: lost the connection to cbatchd") and err.count("\n") == 1
    label = {"label": f"cbatch.job_id={job.spec.job_id}"}
    assert api.containers(all=True, filters=label), "the container outlives a daemon crash"
    fresh_daemon.start()
    record = fresh_daemon.wait_for_event("orphan_removed", job_id=job.spec.job_id)
    assert record["user"] == USER and not api.containers(all=True, filters=label)


def test_sighup_reloads_policy_and_a_broken_file_keeps_the_old_one(fresh_daemon, run):
    fresh_daemon.start()
    settings = dict(fresh_daemon.settings)
    fresh_daemon.config_path.write_text("images: [broken\n")
    fresh_daemon.proc.send_signal(signal.SIGHUP)
    record = fresh_daemon.wait_for_event("reload_failed")
    assert record["kept"] == "previous configuration" and "YAML syntax error" in record["reason"]
    assert run("#!/bin/bash\ncat /etc/os-release\n", d=fresh_daemon).out.startswith("ID=alpha")
    settings["images"] = dict(settings["images"], default="beta")
    fresh_daemon.write_config(settings)
    fresh_daemon.proc.send_signal(signal.SIGHUP)
    fresh_daemon.wait_for_event("config_reloaded", default="beta")
    assert run("#!/bin/bash\ncat /etc/os-release\n", d=fresh_daemon).out.startswith("ID=beta")


def test_stale_socket_is_replaced_but_a_regular_file_is_not(fresh_daemon):
    fresh_daemon.socket.parent.mkdir(parents=True, exist_ok=True)
    fresh_daemon.socket.write_text("not a socket")
    proc = subprocess.run(["python3", "-m", "cbatch.daemon", "--config",
                           str(fresh_daemon.config_path)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 1 and "is not a socket; refusing to replace it" in proc.stderr
    assert fresh_daemon.socket.read_text() == "not a socket"
    fresh_daemon.socket.unlink()
    fresh_daemon.start()
    fresh_daemon.stop(signal.SIGKILL)  # leaves a stale socket behind
    assert fresh_daemon.socket.exists()
    fresh_daemon.start()
    assert fresh_daemon.proc.poll() is None
