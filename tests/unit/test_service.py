"""The systemd unit carries what a production service needs, and nothing that breaks it."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import pytest

from cbatch import systemd

UNIT = Path(__file__).parents[2] / "systemd" / "cbatchd.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_is_a_watched_notify_service_that_restarts():
    service = _unit()["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) >= 10
    assert service["Restart"] == "always" and service["KillMode"] == "process"
    assert service["LimitNOFILE"] == "16384"
    assert "--no-docker" in service["ExecStartPre"]


def test_unit_hardens_without_a_mount_namespace_of_its_own():
    service = _unit()["Service"]
    for key in ("NoNewPrivileges", "RestrictSUIDSGID", "RestrictNamespaces", "LockPersonality"):
        assert service[key] == "yes", key
    # each of these would hide the host's mounts, jobs' homes or Torque's files from cbatchd,
    # or keep its placeholder mounts from dockerd
    for key in ("PrivateTmp", "PrivateMounts", "PrivateDevices", "ProtectSystem", "ProtectHome",
                "ProtectKernelTunables", "ProtectControlGroups", "ReadOnlyPaths",
                "InaccessiblePaths", "TemporaryFileSystem", "CapabilityBoundingSet"):
        assert key not in service, key


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # watches another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_systemds(monkeypatch, env, expected):
    for key in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, str(os.getpid()) if value == "self" else value)
    assert systemd.watchdog_interval_s() == expected
