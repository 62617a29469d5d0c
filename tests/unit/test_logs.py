"""The daemon's log file survives logrotate: records after a move go to a new file."""

from __future__ import annotations

import json

import structlog

from cbatch import logs


def test_log_file_is_reopened_after_rotation(tmp_path):
    path = tmp_path / "cbatchd.log"
    logs.configure("json", "info", path)
    log = structlog.get_logger("cbatchd")
    log.info("before_rotation")
    path.rename(tmp_path / "cbatchd.log.1")  # what logrotate does, without copytruncate
    log.info("after_rotation", job_id="1.vm")
    old = [json.loads(line)["event"] for line in (tmp_path / "cbatchd.log.1").read_text().splitlines()]
    new = [json.loads(line) for line in path.read_text().splitlines()]
    assert old == ["before_rotation"]
    assert [(r["event"], r["job_id"]) for r in new] == [("after_rotation", "1.vm")]
    assert path.stat().st_mode & 0o777 == 0o640


def test_log_file_is_reopened_after_removal(tmp_path):
    path = tmp_path / "cbatchd.log"
    logs.configure("json", "info", path)
    log = structlog.get_logger("cbatchd")
    log.info("first")
    path.unlink()
    log.warning("second")
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["second"]
