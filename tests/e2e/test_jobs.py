"""What a job owner and Torque see, through the pbs_mom harness, a real cbatchd and Docker."""

from __future__ import annotations

import grp
import os
import signal
import time

import pytest

from tests.e2e.conftest import GROUP, USER

pytestmark = [pytest.mark.docker, pytest.mark.harness]


def test_exit_status_passes_through(run):
    assert run("#!/bin/bash\nexit 3\n").status == 3
    assert run("#!/bin/bash\ntrue\n").status == 0


def test_stdout_and_stderr_land_separately_in_order_byte_for_byte(run):
    script = "#!/bin/bash\nfor i in 1 2 3; do echo out$i; echo err$i >&2; done\nprintf 'no newline'\n"
    result = run(script)
    assert result.out == "out1\nout2\nout3\nno newline"
    assert result.err == "err1\nerr2\nerr3\n"


def test_silent_job_leaves_both_files_empty(run):
    result = run("#!/bin/bash\ntrue\n")
    assert (result.out, result.err, result.status) == ("", "", 0)


def test_job_runs_in_the_default_image(run):
    assert run("#!/bin/bash\ncat /etc/os-release\n").out.startswith("ID=alpha\n")


def test_cbatch_image_directive_runs_in_that_image(run):
    result = run("#!/bin/bash\n#PBS -N x\n#CBATCH image=beta\ncat /etc/os-release\n")
    assert result.out.startswith("ID=beta\n"), result.err


def test_refused_image_prints_one_cbatch_line_and_runs_nothing(run, daemon):
    result = run("#!/bin/bash\n#CBATCH image=gamma\necho ran\n")
    assert result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("cbatch: ")
    assert '"gamma"' in result.err and "alpha, beta" in result.err and "line 2" in result.err
    assert result.status == 126
    record = daemon.wait_for_event("job_refused", job_id=result.job.spec.job_id)
    assert record["user"] == USER and record["error"] == "PolicyDenied"


def test_bad_directive_names_its_line(run):
    result = run("#!/bin/bash\n# comment\n#CBATCH colour=blue\necho ran\n")
    assert result.status == 126 and result.out == ""
    assert result.err.startswith("cbatch: bad #CBATCH directive on line 3")
    assert "unknown key 'colour'" in result.err


def test_job_runs_as_its_user_with_all_groups_and_host_names(run, test_user):
    result = run("#!/bin/bash\nid -u; id -g; id -G; whoami; id -gn; ls -ld ~ | sed 's/ .*//'\n")
    uid, gid, groups, name, group_name, _ = result.out.split("\n", 5)
    extra = grp.getgrnam(GROUP).gr_gid
    assert (int(uid), int(gid)) == (test_user.pw_uid, test_user.pw_gid)
    assert {int(g) for g in groups.split()} == {test_user.pw_gid, extra}
    assert (name, group_name) == (USER, USER)


def test_login_shell_as_pbs_mom_runs_it_without_a_starter(run):
    script = ("#!/bin/bash\necho \"$PATH\"\nIFS= read -r -d '' arg0 < /proc/$PPID/cmdline\n"
              "echo \"$arg0\"\necho $SHLVL\n")
    path, parent, shlvl, _ = run(script).out.split("\n")
    assert path == "/usr/local/bin:/usr/bin:/bin"  # from the image's /etc/profile
    assert parent == "-bash"  # the top shell is a login shell, argv[0] "-bash"
    assert shlvl == "2"


def test_environment_cwd_umask_and_arguments_are_the_jobs(run):
    script = "#!/bin/bash\necho $PBS_JOBID $PBS_ENVIRONMENT $USER $HOME\npwd\numask\necho \"[$1] [$2]\"\n"
    result = run(script, submit_args='a1 "b 2"', initdir="/tmp")
    ids, cwd, umask, args, _ = result.out.split("\n")
    assert ids == f"{result.job.spec.job_id} PBS_BATCH {USER} /home/{USER}"
    assert (cwd, umask, args) == ("/tmp", "0077", "[a1] [b 2]")


def test_exec_with_exec_and_sigpipe_ignored_as_natively(run):
    result = run("#!/bin/bash\nyes | head -1\n", exec_with_exec=True)
    assert result.out == "y\n"
    assert "Broken pipe" in result.err  # pbs_mom's ignored SIGPIPE is inherited (contract §2)


def test_job_files_mounted_and_nothing_else(run, site_dirs):
    ro, rw = site_dirs
    script = (f"#!/bin/bash\ncat $PBS_NODEFILE | wc -l\ncat {ro}/marker\n"
              f"touch {ro}/x 2>/dev/null || echo ro-refused\n"
              f"touch {rw}/from-job && echo rw-ok\n"
              "touch ~/home-write && echo home-ok\n"
              "test -e /srv/cbatch-absent || echo absent-skipped\n"
              "test -e /etc/shadow || echo no-shadow\n"
              "test -e /var/run/docker.sock || echo no-docker-socket\n"
              "echo x >> \"$0\" 2>/dev/null || echo script-ro\n")
    result = run(script)
    assert result.out.split("\n") == ["1", "site data", "ro-refused", "rw-ok", "home-ok",
                                      "absent-skipped", "no-shadow", "no-docker-socket",
                                      "script-ro", ""], result.err
    assert os.path.exists(f"{rw}/from-job")


def test_join_oe_writes_one_file(run):
    result = run("#!/bin/bash\necho a\necho b >&2\necho c\n", join=True)
    assert result.out == "a\nb\nc\n"


def test_keep_writes_into_home(run, test_user):
    result = run("#!/bin/bash\necho kept\n", keep=True, job_name="kj")
    assert result.job.paths["out"].parent == __import__("pathlib").Path(test_user.pw_dir)
    assert result.out == "kept\n"


def test_qdel_ends_the_job_as_torque_records_natively(submit, daemon):
    job = submit("#!/bin/bash\necho started\nsleep 300\n")
    daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    job.qdel(kill_delay_s=2)
    assert job.wait(30) == 271  # the top shell dies of SIGTERM: 256 + 15
    assert job.output()[0] == "started\n"
    daemon.wait_for_event("container_removed", job_id=job.spec.job_id)


def test_trapped_sigterm_reaches_the_script(submit, daemon):
    script = "#!/bin/bash\ntrap 'echo got-TERM; exit 9' TERM\necho ready\nwhile :; do sleep 0.1; done\n"
    job = submit(script)
    job.wait_for_output("ready\n")  # the trap is set
    job.qdel(kill_delay_s=5)
    assert job.wait(30) == 271
    assert job.output()[0].startswith("ready\n")


@pytest.mark.parametrize("signum,trap,expected", [
    (signal.SIGUSR1, "", 256 + signal.SIGUSR1),
    (signal.SIGINT, "trap 'echo got-INT; exit 4' INT", 4),
])
def test_qsig_delivers_signals_as_natively(submit, daemon, signum, trap, expected):
    script = f"#!/bin/bash\n{trap}\necho ready\nwhile :; do sleep 0.1; done\n"
    job = submit(script)
    job.wait_for_output("ready\n")  # the trap is set
    job.signal(signum)
    assert job.wait(30) == expected
    if signum == signal.SIGINT:
        assert "got-INT" in job.output()[0]


def test_killed_starter_leaves_no_container(submit, daemon, api):
    job = submit("#!/bin/bash\nsleep 300\n")
    daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    os.kill(job.starter_pid, signal.SIGKILL)
    assert job.wait(30) == 256 + signal.SIGKILL
    deadline = time.monotonic() + 5
    while api.containers(all=True, filters={"label": f"cbatch.job_id={job.spec.job_id}"}):
        assert time.monotonic() < deadline, "container still there 5 s after the starter died"
        time.sleep(0.1)
    daemon.wait_for_event("starter_gone", job_id=job.spec.job_id)


def test_daemon_unreachable_runs_nothing_and_exits_node_failure(run, daemon):
    result = run("#!/bin/bash\necho ran\n", mom_env={"CBATCH_SOCKET": "/nonexistent/sock"})
    assert result.status == 125 and result.out == ""
    assert result.err.startswith("cbatch: cannot reach cbatchd") and result.err.count("\n") == 1


def test_shell_missing_in_image_is_a_clear_refusal(run, daemon):
    result = run("#!/bin/zsh\necho ran\n", shell="/bin/zsh")
    assert result.status == 126 and result.out == ""
    assert result.err == ("cbatch: the image has no /bin/zsh (the job's shell) or it cannot "
                          "run there; choose another image or shell (qsub -S)\n")
    record = daemon.wait_for_event("job_refused", job_id=result.job.spec.job_id)
    assert record["container_id"] and record["image"] == "alpha" and "zsh" in record["init_error"]


def test_array_job_uses_its_own_script(run):
    result = run("#!/bin/bash\necho $PBS_ARRAYID $PBS_JOBID\n", job_id="77[3].vm")
    assert result.out == "3 77[3].vm\n"
    assert result.job.paths["script"].name == "77-3.vm.SC"


def test_file_size_rlimit_applies_inside(run):
    result = run("#!/bin/bash\nhead -c 5000 /dev/zero > ~/big || echo status=$?\n",
                 rlimits={"fsize": (1024, 1024)})
    assert "status=153" in result.out  # SIGXFSZ, as -l file=1kb does natively


def test_output_streams_through_the_starter_when_fds_are_pipes(run):
    script = "#!/bin/bash\necho out1\necho err1 >&2\nsleep 1\necho out2\n"
    result = run(script, pipe_output=True)
    assert (result.status, result.out, result.err) == (0, "out1\nout2\n", "err1\n")


def test_out_of_memory_is_named_on_the_error_file(run, daemon):
    limit = 64 * 2**20
    result = run("#!/bin/bash\nhead -c 400M /dev/zero | tail > /dev/null\necho after=$?\n",
                 rlimits={"rss": (limit, limit)})
    assert result.out == "after=137\n"  # the pipeline's tail was killed, the job went on
    assert result.err.endswith("cbatch: a process of the job was killed: it ran out of memory "
                               "(limit of 64 MiB); request more memory (qsub -l mem=...) or "
                               "use less\n"), result.err
    whole = run("#!/bin/bash\nx=$(yes | head -c 300M)\necho not-reached\n",
                rlimits={"rss": (limit, limit)})
    assert whole.status == 137 and whole.out == ""  # the script itself was killed
    assert whole.err.endswith("cbatch: job killed: it ran out of memory (limit of 64 MiB); "
                              "request more memory (qsub -l mem=...) or use less\n"), whole.err
    record = daemon.wait_for_event("job_finished", job_id=result.job.spec.job_id)
    assert record["oom_killed"] is True


def test_suspend_stops_the_job_and_resume_continues_it(submit, daemon):
    job = submit("#!/bin/bash\nfor ((i=1; i<=200; i++)); do echo $i; sleep 0.05; done\n")
    daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    time.sleep(1)
    job.command("suspend")  # TSTP, 5 s later STOP (as qsig -s suspend)
    daemon.wait_for_event("job_suspended", job_id=job.spec.job_id, timeout=15)
    time.sleep(0.5)
    frozen = job.paths["out"].read_text()
    time.sleep(1.5)
    assert job.paths["out"].read_text() == frozen, "the job made progress while suspended"
    job.command("resume")
    assert job.wait(60) == 0
    assert job.output()[0].split() == [str(i) for i in range(1, 201)]


def test_tmpdir_is_mounted_when_it_is_the_users_own(run, test_user):
    result = run("#!/bin/bash\ntouch $TMPDIR/x && echo tmp-ok $TMPDIR\n", tmpdir=True)
    assert result.out == f"tmp-ok {result.job.paths['tmpdir']}\n", result.err
    foreign = run("#!/bin/bash\nls $TMPDIR 2>/dev/null | head -1; echo done\n",
                  job_env={"TMPDIR": "/root"})
    assert foreign.out == "done\n"  # /root is not the user's: not mounted, not visible


def test_tm_task_runs_its_command_in_the_jobs_image_without_a_shell(run, daemon, test_user):
    """pbsdsh/mpiexec through TM: argv spawned directly, stdin /dev/null, its own container."""
    result = run("#!/bin/bash\n#CBATCH image=beta\nsleep 1\n",
                 tm_argv=["/bin/sh", "-c", "echo task=$PBS_TASKNUM user=${USER:-unset}; id -u; "
                          "head -1 /etc/os-release; umask; cat"])
    assert result.status == 0, result.err
    assert result.out == f"task=2 user=unset\n{test_user.pw_uid}\nID=beta\n0077\n"
    record = daemon.wait_for_event("container_started", job_id=result.job.spec.job_id)
    assert record["task"] == 2 and record["image"] == "beta"


def test_walltime_kill_is_recorded_as_pbs_mom_records_it(submit, daemon):
    job = submit("#!/bin/bash\necho working\nsleep 300\n")
    daemon.wait_for_event("container_started", job_id=job.spec.job_id)
    job.command("walltime 5")
    assert job.wait(30) == -11  # JOB_EXEC_OVERLIMIT_WT, pbs_mom's own code
    out, err = job.output()
    assert out == "working\n" and err == "=>> PBS: job killed: walltime 5 exceeded limit 5\n"
    daemon.wait_for_event("container_removed", job_id=job.spec.job_id)


def test_bash_env_is_read_by_the_login_shell_and_the_script_as_natively(run, test_user):
    """A non-interactive login bash and the script's bash both read BASH_ENV; nothing else."""
    env_file = f"{test_user.pw_dir}/bash_env.sh"
    with open(env_file, "w") as f:
        f.write("echo sourced-by $$ >&2\n")
    os.chmod(env_file, 0o644)
    result = run("#!/bin/bash\necho script $$ $PPID\n", job_env={"BASH_ENV": env_file})
    _, script_pid, shell_pid = result.out.split()
    assert result.err == f"sourced-by {shell_pid}\nsourced-by {script_pid}\n"
    os.unlink(env_file)


def test_the_jobs_shell_reads_its_script_line_from_a_pipe_as_natively(run):
    result = run("#!/bin/bash\nreadlink /proc/$PPID/fd/0 | sed 's/:.*//'\nread -r rest || echo at-eof\n")
    assert result.out == "pipe\nat-eof\n", result.err


def test_job_silent_longer_than_every_client_timeout_still_streams(run):
    """75 s of silence: past docker-py's 60 s default and the daemon's request timeout."""
    script = "#!/bin/bash\necho before\nsleep 75\necho after\necho late-err >&2\n"
    result = run(script, timeout=150, pipe_output=True)
    assert (result.status, result.out, result.err) == (0, "before\nafter\n", "late-err\n")
