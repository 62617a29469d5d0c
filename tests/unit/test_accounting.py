"""pbs_mom's adoption of a job's container runs with the job's credentials only."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cbatch import accounting
from tests.unit.factories import make_job


@pytest.mark.parametrize("groups, expected", [
    ((1001, 1002), "--groups=1001,1002"),
    ((), "--clear-groups"),
])
def test_adoption_runs_as_the_jobs_uid_gid_and_groups(mocker, groups, expected):
    mocker.patch.object(accounting.os, "access", return_value=True)
    prefix, extra = accounting._as_user(make_job(groups=groups))
    assert prefix == [accounting.SETPRIV, "--reuid=1001", "--regid=1001", expected, "--"]
    assert extra == {}


def test_without_setpriv_python_switches_the_user(mocker):
    mocker.patch.object(accounting.os, "access", return_value=False)
    prefix, extra = accounting._as_user(make_job())
    assert prefix == [] and extra == {"user": 1001, "group": 1001, "extra_groups": [1001, 1002]}


@pytest.mark.skipif(os.geteuid() != 0 or not os.access(accounting.SETPRIV, os.X_OK),
                    reason="needs root and setpriv")
def test_the_program_gets_no_privilege_back():
    """Real, saved and effective ids are the job's; no capabilities."""
    prefix, _ = accounting._as_user(make_job(uid=65534, gid=65534, groups=(100,)))
    status = subprocess.run([*prefix, sys.executable, "-c",
                             "import os; print(os.getresuid(), os.getresgid(), os.getgroups());"
                             "print(open('/proc/self/status').read())"],
                            capture_output=True, text=True, check=True).stdout
    assert status.splitlines()[0] == "(65534, 65534, 65534) (65534, 65534, 65534) [100]"
    assert "CapEff:\t0000000000000000" in status and "CapPrm:\t0000000000000000" in status


@pytest.mark.parametrize("tool, option", [
    ("/usr/local/bin/pbs_track", "-a"),  # Torque: pbs_track -j <job> -a <pid>
    ("/opt/pbs/bin/pbs_attach", "-p"),  # OpenPBS: pbs_attach -j <job> -p <pid>
])
def test_each_batch_systems_adoption_tool_gets_the_pid_its_own_way(tool, option):
    assert accounting._pid_option(Path(tool)) == option


class Inspecting:
    """An engine that counts inspects and says what Docker would."""

    def __init__(self, state):
        self.state, self.inspects = state, 0

    def inspect(self, container_id):
        self.inspects += 1
        return {"State": self.state}


def test_oom_while_held_is_read_from_the_cgroup_without_asking_docker(mocker):
    mocker.patch.object(accounting, "container_init", return_value=None)  # still the init
    mocker.patch.object(accounting, "oom_kills", return_value=1)
    engine = Inspecting({"Running": True, "Pid": 4321, "OOMKilled": False})
    assert accounting.oom_killed(engine, "c1", log=None, init_pid=4321, uid=1001)
    assert engine.inspects == 0


def test_oom_of_an_ended_container_is_dockers_word(mocker):
    mocker.patch.object(accounting, "container_init", return_value="pid 4321 is gone")
    engine = Inspecting({"Running": False, "Pid": 0, "OOMKilled": True})
    assert accounting.oom_killed(engine, "c1", log=None, init_pid=4321, uid=1001)
    assert engine.inspects == 1
