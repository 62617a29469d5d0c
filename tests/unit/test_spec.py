from pathlib import Path

import pytest

from cbatch import spec
from cbatch.binds import Bind
from tests.unit.factories import DIGEST, make_decision, make_job


def build(job=None, decision=None, **kwargs):
    return spec.build(job or make_job(), decision or make_decision(), (), **kwargs)


def test_container_runs_as_the_peer_with_all_groups_hardened():
    s = build()
    assert s.create["user"] == "1001:1001" and s.host_config["group_add"] == ["1001", "1002"]
    hc = s.host_config
    assert hc["init"] is True and hc["privileged"] is False and hc["cap_drop"] == ["ALL"]
    kept = build(keeper=(Path("/usr/libexec/cbatch/cbatch-keeper"), Path("/run/cbatch/exit/j")))
    assert kept.host_config["init"] is False  # the keeper is pid 1
    assert kept.create["entrypoint"][:2] == ["/.cbatch-keeper", "/.cbatch-exit"]
    assert hc["security_opt"] == ["no-new-privileges"] and hc["pids_limit"] == 4096
    assert hc["log_config"]["Type"] == "none" and hc["network_mode"] == "host"
    assert s.create["image"] == DIGEST and s.create["working_dir"] == "/home/alice/run"


def test_the_image_root_is_read_only_unless_the_admin_says_otherwise():
    assert build().host_config["read_only"] is True
    writable = make_decision(container={"read_only_root": False})
    assert build(decision=writable).host_config["read_only"] is False


def test_name_and_labels_come_from_the_job():
    s = build(make_job(job_id="7[2].vm", prefix="7-2.vm"))
    assert s.name == "cbatch-7-2.vm"
    assert s.labels["cbatch.job_id"] == "7[2].vm" and s.labels["cbatch.starter_pid"] == "4242"
    assert s.labels["cbatch.starter_start"] == "777" and s.labels["cbatch"] == "1"
    assert build(make_job(task=3)).name == "cbatch-12.vm-t3"


SC_LINE = " <<'CBATCH_STDIN'\n/var/spool/torque/mom_priv/jobs/12.vm.SC\nCBATCH_STDIN\n"


def test_login_shell_prologue_restores_umask_sigpipe_argv0_and_stdin():
    assert spec.command(make_job(), spec.STREAM, spec.STREAM) == [
        "/bin/bash", "-c", "umask 0077; trap '' PIPE; unset HOSTNAME; exec -a -bash /bin/bash" + SC_LINE]


def test_openpbs_jobs_keep_sigpipe_default_and_a_qsub_v_hostname_stays():
    """OpenPBS's mom leaves SIGPIPE at its default; Docker's HOSTNAME goes unless the job
    has its own."""
    job = make_job(sigpipe_ignored=False, env={"HOSTNAME": "mine"})
    assert spec.command(job, spec.STREAM, spec.STREAM) == [
        "/bin/bash", "-c", "umask 0077; exec -a -bash /bin/bash" + SC_LINE]


def test_an_interactive_job_gets_a_terminal_and_its_login_shell_reads_it():
    s = build(make_job(interactive=True, stdin=b"", script=None, script_text=""))
    assert s.create["tty"] is True and s.create["stdin_open"] is True
    assert s.create["entrypoint"] == [
        "/bin/bash", "-c", "umask 0077; trap '' PIPE; unset HOSTNAME; exec -a -bash /bin/bash"]
    batch = build()
    assert batch.create["tty"] is False and batch.create["stdin_open"] is False


@pytest.mark.parametrize("stdin,redirect", [
    (b"", " </dev/null"),
    (b"exec /x.SC a1 \"b 2\"\n", " <<'CBATCH_STDIN'\nexec /x.SC a1 \"b 2\"\nCBATCH_STDIN\n"),
    (b"/x.SC CBATCH_STDIN\n", " <<'CBATCH_STDIN_'\n/x.SC CBATCH_STDIN\nCBATCH_STDIN_\n"),
    (b"/x.SC $HOME `id`", " <<'CBATCH_STDIN'\n/x.SC $HOME `id`\nCBATCH_STDIN\n"),
])
def test_stdin_bytes_travel_as_a_quoted_here_document(stdin, redirect):
    assert spec.command(make_job(stdin=stdin), spec.STREAM, spec.STREAM)[2].endswith(redirect)


def test_output_files_are_appended_to_by_the_job_itself():
    out = spec.Output("file", Path("/spool/12.vm.OU"))
    err = spec.Output("file", Path("/spool/it's.ER"))
    cmd = spec.command(make_job(), out, err)[2]
    assert "exec 1>>/spool/12.vm.OU 2>>'/spool/it'\"'\"'s.ER';" in cmd
    joined = spec.command(make_job(), out, spec.Output("file", out.path, same_as_stdout=True))[2]
    assert "exec 1>>/spool/12.vm.OU 2>&1;" in joined
    assert "exec 1>/dev/null" in spec.command(make_job(), spec.Output("null"), spec.STREAM)[2]


@pytest.mark.parametrize("shell,expected", [
    ("/bin/sh", ["/bin/sh", "-c", "umask 0077; trap '' PIPE; unset HOSTNAME; exec /bin/sh -l" + SC_LINE]),
    ("/bin/tcsh", ["/bin/sh", "-c", "umask 0077; trap '' PIPE; unset HOSTNAME; exec /bin/tcsh -l" + SC_LINE]),
])
def test_shells_without_exec_a_get_a_login_flag(shell, expected):
    assert spec.command(make_job(argv=(shell,)), spec.STREAM, spec.STREAM) == expected


def test_tm_task_runs_its_argv_without_a_shell():
    cmd = spec.command(make_job(task=2, argv=("/bin/sh", "-c", "echo hi")), spec.STREAM, spec.STREAM)
    assert cmd == ["/bin/sh", "-c", "umask 0077; trap '' PIPE; unset HOSTNAME; exec \"$@\" </dev/null", "cbatch",
                   "/bin/sh", "-c", "echo hi"]


def test_memory_rlimit_becomes_a_hard_limit_and_torques_slots_the_cpu_share():
    hc = build().host_config
    assert hc["mem_limit"] == 2 * 2**30 == hc["memswap_limit"]
    assert hc["cpu_shares"] == 1024  # the factory's job: PBS_NUM_PPN=4 claimed, 1 slot given
    assert build(make_job(slots=4)).host_config["cpu_shares"] == 4096
    assert {"Name": "nofile", "Soft": 1024, "Hard": 4096} in hc["ulimits"]
    off = build(decision=make_decision(container={"memory_from_rlimit": False})).host_config
    assert "mem_limit" not in off


def test_environment_is_the_jobs_minus_dropped_names():
    env = build(decision=make_decision(jobs={"drop_env": ["SECRET_TOKEN"]})).create["environment"]
    assert "SECRET_TOKEN" not in env and env["PBS_JOBID"] == "12.vm"


def test_mounts_are_binds_at_their_targets():
    s = spec.build(make_job(), make_decision(), (Bind(Path("/a"), Path("/b"), True),))
    assert s.host_config["mounts"] == [{"Type": "bind", "Source": "/a", "Target": "/b",
                                        "ReadOnly": True,
                                        "BindOptions": {"Propagation": "rprivate"}}]


def test_bash_env_reaches_the_jobs_shells_but_not_the_prologue():
    job = make_job(env={"BASH_ENV": "/home/alice/my env.sh", "PBS_JOBID": "12.vm"})
    s = build(job)
    assert "BASH_ENV" not in s.create["environment"]
    assert s.create["entrypoint"][2] == ("umask 0077; trap '' PIPE; unset HOSTNAME; export BASH_ENV='/home/alice/"
                                         "my env.sh'; exec -a -bash /bin/bash" + SC_LINE)


def test_container_goes_under_torques_job_cgroup_when_one_exists(tmp_path):
    from cbatch import accounting as cgroups
    (tmp_path / "cpuacct" / "torque" / "12.vm").mkdir(parents=True)
    assert cgroups.torque_parent("12.vm", "cgroupfs", tmp_path) == "/torque/12.vm"
    assert cgroups.torque_parent("13.vm", "cgroupfs", tmp_path) is None
    assert cgroups.torque_parent("12.vm", "systemd", tmp_path) is None
    assert build(cgroup_parent="/torque/12.vm").host_config["cgroup_parent"] == "/torque/12.vm"
    assert "cgroup_parent" not in build().host_config
