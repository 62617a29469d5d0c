"""Interactive jobs (qsub -I) through the harness: the job's terminal, in its container."""

import signal

from tests.e2e.conftest import USER


def start(submit, script="", **kwargs):
    """An interactive job whose shell in the container has answered (the terminal echoes
    keys typed early itself, so the proof is output only the shell makes)."""
    job = submit(script, interactive=True, **kwargs)
    job.type("PS1='$((6*7))> '; echo st''arted\n")
    job.wait_for_output("started")
    return job


def test_an_interactive_job_gets_a_terminal_in_its_container(submit, daemon, test_user):
    job = start(submit, winsize=(33, 101))
    job.type("id -un; echo $0 $PBS_ENVIRONMENT; tty; stty size; exit 7\n")
    assert job.wait(30) == 265  # natively too: the session leader kills its own group
    lines = job.output()[0].splitlines()  # the container's terminal ends lines with \r\n
    assert USER in lines and "-bash PBS_INTERACTIVE" in lines  # a login shell, as natively
    assert "/dev/pts/0" in lines and "33 101" in lines  # its own terminal, the owner's size
    record = daemon.wait_for_event("job_finished", job_id=job.spec.job_id)
    assert record["exit_status"] == 7 and record["image"] == "alpha"
    assert not [r for r in daemon.events("terminal_reattached") if r["job_id"] == job.spec.job_id]


def test_ctrl_c_and_resizing_reach_the_shell_in_the_container(submit):
    job = start(submit)
    job.type("sleep 60; echo not-interrupted\n")
    job.wait_for_output("sleep 60")
    job.type("\x03")  # ^C: the container's terminal makes it SIGINT for the foreground job
    job.type("echo after-int\n")
    job.wait_for_output("\nafter-int")
    job.resize(50, 120)  # the owner's window; the container's terminal follows
    job.type("until [ \"$(stty size)\" = '50 120' ]; do sleep 0.1; done; echo re''sized\n")
    job.wait_for_output("resized")
    job.type("exit\n")
    assert job.wait(30) == 265
    assert "not-interrupted" not in job.output()[0].splitlines()  # only its echo


def test_an_interactive_job_takes_its_image_from_the_script_given_to_qsub(submit):
    job = start(submit, "#!/bin/bash\n#CBATCH image=beta\n")
    job.type("cat /etc/os-release; exit\n")
    job.wait(30)
    assert 'PRETTY_NAME="beta"' in job.output()[0]


def test_qdel_ends_an_interactive_job_and_its_container(submit, daemon, api):
    job = start(submit)
    job.qdel(kill_delay_s=1)  # an interactive shell ignores TERM; KILL follows
    assert job.wait(30) in (256 + signal.SIGTERM, 256 + signal.SIGKILL)
    daemon.wait_for_event("container_removed", job_id=job.spec.job_id)
    assert not api.containers(all=True, filters={"label": f"cbatch.job_id={job.spec.job_id}"})


def test_a_missing_shell_is_one_clear_line_on_the_terminal(submit):
    job = submit("", interactive=True, shell="/bin/zsh")
    assert job.wait(30) == 265
    assert job.output()[0].splitlines()[-1] == (
        "cbatch: the image has no /bin/zsh (the job's shell) or it cannot run there; "
        "choose another image or shell (qsub -S)")


def test_an_interactive_job_rides_out_a_daemon_restart(fresh_daemon, submit):
    fresh_daemon.start()
    job = start(submit, d=fresh_daemon)
    fresh_daemon.stop(signal.SIGKILL)
    job.type("echo typed-while-''away\n")  # waits in the job's terminal for the new daemon
    fresh_daemon.start()
    fresh_daemon.wait_for_event("job_resumed", job_id=job.spec.job_id)
    job.wait_for_output("typed-while-away")
    job.type("exit\n")
    assert job.wait(30) == 265
    fresh_daemon.wait_for_event("container_removed", job_id=job.spec.job_id)


def test_typing_dockers_detach_keys_does_not_cut_the_job_off(submit, daemon):
    job = start(submit)
    job.type("\x1e\x1d\x1f\x1e")  # ctrl-^ ctrl-] ctrl-_ ctrl-^: Docker ends the attach
    daemon.wait_for_event("terminal_reattached", job_id=job.spec.job_id)
    job.type("echo still-''here\n")
    job.wait_for_output("still-here")
    job.type("exit\n")
    assert job.wait(30) == 265
    record = daemon.wait_for_event("job_finished", job_id=job.spec.job_id)
    assert record["exit_status"] == 0
