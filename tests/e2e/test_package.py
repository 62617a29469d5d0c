"""The installed Debian package, as scripts/setup-node.sh installs it (README's install)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

PROGRAMS = ("/usr/bin/cbatch-starter", "/usr/bin/cbatchd", "/usr/bin/cbatch",
            "/usr/libexec/cbatch/cbatch-keeper")


def _dpkg_query(*args: str) -> str:
    return subprocess.run(["dpkg-query", *args], capture_output=True, text=True).stdout


@pytest.fixture(scope="module", autouse=True)
def package_installed():
    if "install ok installed" not in _dpkg_query("-W", "-f=${Status}", "cbatch"):
        if os.environ.get("CI") == "true":
            pytest.fail("cbatch's Debian package is not installed: run scripts/setup-node.sh")
        pytest.skip("cbatch's Debian package is not installed")


def test_every_program_comes_from_the_package():
    owned = set(_dpkg_query("-L", "cbatch").split())
    for program in PROGRAMS:
        assert program in owned, program
        assert os.access(program, os.X_OK), program


def test_the_daemon_runs_the_packaged_modules_on_debians_libraries():
    probe = ("import cbatch, docker, structlog, yaml, prometheus_client as p;"
             "print(cbatch.__file__, docker.__file__, structlog.__file__, yaml.__file__,"
             " p.__file__)")
    # from / with the daemon's interpreter: not this checkout's modules
    files = subprocess.run(["/usr/bin/python3", "-c", probe], cwd="/", check=True,
                           capture_output=True, text=True).stdout.split()
    assert files and all(f.startswith("/usr/lib/python3/dist-packages/") for f in files), files
    assert Path("/usr/bin/cbatchd").read_text().startswith("#!/usr/bin/python3")


def test_policy_is_a_conffile_and_the_unit_is_installed_but_not_enabled():
    assert "/etc/cbatch.yaml" in _dpkg_query("-W", "-f=${Conffiles}", "cbatch")
    unit = Path("/lib/systemd/system/cbatchd.service")
    assert "ExecStart=/usr/bin/cbatchd" in unit.read_text()
    enabled = list(Path("/etc/systemd/system").glob("*.wants/cbatchd.service"))
    assert not enabled, enabled


def test_depends_on_debians_own_python_packages():
    depends = _dpkg_query("-W", "-f=${Depends}", "cbatch")
    for dependency in ("docker.io", "python3-docker", "python3-yaml", "python3-structlog",
                       "python3-prometheus-client"):
        assert dependency in depends, depends


def test_starter_and_keeper_are_static():
    for program in ("/usr/bin/cbatch-starter", "/usr/libexec/cbatch/cbatch-keeper"):
        header = subprocess.run(["readelf", "-l", program], capture_output=True, text=True,
                                check=True).stdout
        assert "INTERP" not in header, program  # no dynamic loader runs before main
