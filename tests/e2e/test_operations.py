"""Running cbatchd as a site does: systemd's watchdog, a log file, Prometheus metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from cbatch.harness.localnode import installed
from tests.e2e.conftest import make_daemon

pytestmark = [pytest.mark.docker, pytest.mark.harness]


def _messages(sock: socket.socket, seconds: float) -> list[str]:
    got, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
    return got


def test_watchdog_pings_come_from_a_turning_main_loop(image_ids, site_dirs, test_user, tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    d = make_daemon(image_ids, site_dirs)
    d.env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    try:
        d.start()
        first = _messages(notify, 1.5)
        assert first[0] == "READY=1"
        assert 4 <= first.count("WATCHDOG=1") <= 9, first  # every 0.2 s
        os.kill(d.proc.pid, signal.SIGSTOP)  # a stuck loop: systemd must hear nothing
        _messages(notify, 0.3)  # (drain what was sent before the stop)
        assert _messages(notify, 1.0) == []
        os.kill(d.proc.pid, signal.SIGCONT)
        assert "WATCHDOG=1" in _messages(notify, 1.0)
    finally:
        d.cleanup()
        notify.close()


def test_log_file_mode_writes_records_and_follows_logrotate(image_ids, site_dirs, test_user):
    d = make_daemon(image_ids, site_dirs)
    log = d.root / "log" / "cbatchd.log"
    log.parent.mkdir()
    proc = subprocess.Popen([installed("cbatchd"), "--config", str(d.config_path),
                             "--log-file", str(log)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not d.socket.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
        assert "daemon_started" in events
        log.rename(log.with_suffix(".log.1"))  # logrotate's move, with no postrotate signal
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not log.exists() or "config_reloaded" not in log.read_text():
            assert time.monotonic() < deadline, "no config_reloaded record in the new file"
            time.sleep(0.05)
        assert "config_reloaded" not in log.with_suffix(".log.1").read_text()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert (out, err) == (b"", b"")  # all of it in the file
        assert json.loads(log.read_text().splitlines()[-1])["event"] == "daemon_stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        d.cleanup()


def test_unwritable_log_file_is_one_line_and_no_daemon(tmp_path, image_ids, site_dirs, test_user):
    d = make_daemon(image_ids, site_dirs)
    try:
        result = subprocess.run([installed("cbatchd"), "--config", str(d.config_path),
                                 "--log-file", str(tmp_path / "no" / "such" / "dir.log")],
                                capture_output=True, text=True, timeout=30)
    finally:
        d.cleanup()
    assert result.returncode == 1
    assert result.stderr == (f"cbatchd: cannot open the log file {tmp_path}/no/such/dir.log: "
                             "No such file or directory\n")


def _samples(path) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(path.read_text())
            for s in family.samples}


def _jobs(samples: dict, outcome: str) -> float:
    return samples[("cbatch_jobs_total", (("outcome", outcome),))]


def _wait_for(path, check, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        samples = _samples(path) if path.exists() else {}
        if samples and check(samples):
            return samples
        assert time.monotonic() < deadline, samples
        time.sleep(0.2)


def test_metrics_count_jobs_by_outcome_for_node_exporter(image_ids, site_dirs, test_user, run,
                                                          submit):
    d = make_daemon(image_ids, site_dirs)
    textfile = d.root / "textfile" / "cbatch.prom"
    textfile.parent.mkdir()
    settings = dict(d.settings, metrics={"textfile": str(textfile), "interval_s": 1})
    settings["images"]["aliases"]["gone"] = {"ref": "sha256:" + "0" * 64}
    d.write_config(settings)
    d.start()
    try:
        limit = 64 * 2**20
        assert run("#!/bin/bash\nexit 3\n", d=d).status == 3  # ran, whatever its status
        assert run("#!/bin/bash\n#CBATCH image=nope\ntrue\n", d=d).status == 126
        assert run("#!/bin/bash\n#CBATCH image=gone\ntrue\n", d=d).status == 125
        assert run("#!/bin/bash\nx=$(yes | head -c 300M)\n", d=d,
                   rlimits={"rss": (limit, limit)}).status == 137
        sleeper = submit("#!/bin/bash\nsleep 4\nexit 0\n", d=d)
        d.wait_for_event("container_started", job_id=sleeper.spec.job_id)
        outcomes = ("ran", "refused", "node_failure", "oom")
        samples = _wait_for(textfile, lambda s: s[("cbatch_containers_running", ())] == 1
                            and sum(_jobs(s, o) for o in outcomes) == 4)
        # the OOM-killed job counts as oom exactly when the daemon's record names it so
        ooms = sum(r["oom_killed"] for r in d.events("job_finished"))
        assert {o: _jobs(samples, o) for o in ("ran", "refused", "node_failure", "oom")} == {
            "ran": 2 - ooms, "refused": 1, "node_failure": 1, "oom": ooms}
        assert samples[("cbatch_launch_seconds_count", ())] == 2  # the two that started
        assert 0 < samples[("cbatch_launch_seconds_sum", ())] < 30
        assert samples[("cbatch_reconnects_total", ())] == 0
        assert not list(textfile.parent.glob("*.tmp*"))  # written by rename, nothing left

        d.stop()  # a restart under the running job: its starter reconnects
        d.start()
        assert sleeper.wait(30) == 0
        samples = _wait_for(textfile, lambda s: _jobs(s, "ran") == 1)
        assert samples[("cbatch_reconnects_total", ())] == 1
        assert samples[("cbatch_containers_running", ())] == 0
        assert _jobs(samples, "refused") == 0  # a new daemon counts from zero
    finally:
        d.cleanup()
