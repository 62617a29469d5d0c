"""The daemon's own life: who it refuses, restarts, orphans, reloads."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import USER

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
    record = daemon.wait_for_event("job_refused", error="NotABatchJob", uid=test_user.pw_uid)
    assert record["parent"] != "pbs_mom"


def test_root_jobs_are_refused_by_default(daemon):
    proc = subprocess.run(["setsid", "--wait", daemon.starter, "/bin/bash"], input="x\n",
                          capture_output=True, text=True,
                          env={"CBATCH_SOCKET": str(daemon.socket), "PATH": "/bin"})
    assert proc.returncode == 126
    assert proc.stderr.startswith("cbatch: jobs of uid 0 may not run in containers")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_daemon_restart_under_a_running_job_loses_nothing(fresh_daemon, submit, api, how):
    """Crash (KILL) or systemctl restart (TERM): the job goes on, every line once, in order."""
    fresh_daemon.start()
    script = "#!/bin/bash\nfor ((i=1; i<=300; i++)); do echo $i; sleep 0.01; done\nexit 5\n"
    job = submit(script, d=fresh_daemon)
    fresh_daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    time.sleep(0.5)
    fresh_daemon.stop(how)
    time.sleep(1)
    fresh_daemon.start()
    assert job.wait(60) == 5
    out, err = job.output()
    assert out.split() == [str(i) for i in range(1, 301)] and err == ""
    fresh_daemon.wait_for_event("job_resumed", job_id=job.spec.job_id)
    fresh_daemon.wait_for_event("container_removed", job_id=job.spec.job_id)
    assert not api.containers(all=True, filters={"label": f"cbatch.job_id={job.spec.job_id}"})


def test_orphan_of_a_dead_starter_is_removed_when_the_daemon_starts(fresh_daemon, submit, api):
    fresh_daemon.start()
    job = submit("#!/bin/bash\nsleep 300\n", d=fresh_daemon)
    fresh_daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    fresh_daemon.stop(signal.SIGKILL)
    os.kill(job.starter_pid, signal.SIGKILL)  # pbs_mom's SIGKILL while no daemon listens
    assert job.wait(30) == 256 + signal.SIGKILL
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
    assert record["kept"] == "previous configuration" and "not valid YAML" in record["reason"]
    assert run("#!/bin/bash\ncat /etc/os-release\n", d=fresh_daemon).out.startswith("ID=alpha")
    settings["images"] = dict(settings["images"], default="beta")
    fresh_daemon.write_config(settings)
    fresh_daemon.proc.send_signal(signal.SIGHUP)
    fresh_daemon.wait_for_event("config_reloaded", default="beta")
    assert run("#!/bin/bash\ncat /etc/os-release\n", d=fresh_daemon).out.startswith("ID=beta")


def test_stale_socket_is_replaced_but_a_regular_file_is_not(fresh_daemon):
    fresh_daemon.socket.parent.mkdir(parents=True, exist_ok=True)
    fresh_daemon.socket.write_text("not a socket")
    proc = subprocess.run(["/usr/bin/python3", "-m", "cbatch.daemon", "--config",
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


def test_periodic_sweep_removes_orphans_while_the_daemon_runs(image_ids, site_dirs, test_user, api):
    from tests.e2e.conftest import make_daemon
    d = make_daemon(image_ids, site_dirs, container={"sweep_interval_s": 1})
    d.start()
    try:
        hc = api.create_host_config(init=True)
        orphan = api.create_container(image_ids["alpha"], "/bin/sleep 60", host_config=hc, labels={
            "cbatch": "1", "cbatch.job_id": "orphan.vm", "cbatch.user": USER,
            "cbatch.starter_pid": "999999999", "cbatch.starter_start": "5"})["Id"]
        api.start(orphan)
        record = d.wait_for_event("orphan_removed", job_id="orphan.vm", timeout=60)  # a loaded Docker lists slowly
        assert record["container_id"] == orphan[:12]
        assert not api.containers(all=True, filters={"label": "cbatch.job_id=orphan.vm"})
    finally:
        d.cleanup()


def test_a_second_starter_for_a_running_job_task_is_refused(daemon, submit):
    first = submit("#!/bin/bash\nsleep 300\n", job_id="4242.vm")  # ended by qdel below
    daemon.wait_for_event("container_started", job_id="4242.vm")
    second = submit("#!/bin/bash\nsleep 30\n", job_id="4242.vm", keep=True, job_name="again")
    assert second.wait(60) == 126
    assert second.output()[1] == "cbatch: this job task already runs in a container on this node\n"
    first.qdel(0.5)
    assert first.wait(30) == 271


def test_the_parent_check_can_be_relaxed_for_demos_only(image_ids, site_dirs, test_user):
    from cbatch.harness import momsim
    from tests.e2e.conftest import job_spec, make_daemon
    d = make_daemon(image_ids, site_dirs, torque={"require_pbs_mom_parent": False})
    d.start()
    try:
        spec = job_spec(d, "#!/bin/bash\necho relaxed\n", job_id="77.vm")
        paths = momsim.stage(spec)
        env = momsim.environment(spec)
        proc = subprocess.run(
            ["setpriv", f"--reuid={test_user.pw_uid}", f"--regid={test_user.pw_gid}",
             "--init-groups", "setsid", "--wait", d.starter, "/bin/bash"],
            input=f"{paths['script']}\n", capture_output=True, text=True, env=env,
            cwd=test_user.pw_dir, timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "relaxed\n", "")
    finally:
        d.cleanup()
