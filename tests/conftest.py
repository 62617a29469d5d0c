"""Shared fixtures: clean structlog config, Docker availability (a failure under CI)."""

from __future__ import annotations

import os

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(version="1.41", timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


def pytest_collection_modifyitems(config, items):
    needs_docker = [i for i in items if i.get_closest_marker("docker")]
    needs_root = [i for i in items if i.get_closest_marker("harness")]
    if needs_docker and not docker_available():
        if os.environ.get("CI") == "true":
            raise pytest.UsageError("CI=true but no Docker engine answers: docker tests "
                                    "must run in CI, never be skipped")
        for item in needs_docker:
            item.add_marker(pytest.mark.skip(reason="no Docker engine on this machine"))
    if needs_root and os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            raise pytest.UsageError("CI=true but not root: harness tests need root")
        for item in needs_root:
            item.add_marker(pytest.mark.skip(reason="the pbs_mom harness needs root"))
