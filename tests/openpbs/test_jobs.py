"""What an OpenPBS job owner sees when cbatch's hook runs the job in a container: what
OpenPBS records natively (qstat -fx Exit_status, the accounting log, the output files)."""

from __future__ import annotations

import time

from cbatch.errors import EXIT_REFUSED
from tests.harness import openpbs

REFUSED = EXIT_REFUSED

IN_IMAGE = "grep -q '^ID=openpbs-tier' /etc/os-release && echo in-image\n"


def test_a_script_job_runs_in_the_image_and_its_exit_status_is_recorded(submit):
    job = submit("#!/bin/bash\n" + IN_IMAGE + "echo out; echo err >&2; exit 3\n")
    status = job.wait()
    assert status["Exit_status"] == 3
    assert job.output("o") == "in-image\nout\n" and job.output("e") == "err\n"
    assert openpbs.accounting(job.id).get("Exit_status") == "3"


def test_the_job_has_the_environment_openpbs_gave_it(submit):
    job = submit("echo $PBS_JOBID $PBS_ENVIRONMENT $PBS_O_QUEUE $PWD\n")
    job.wait()
    assert job.output("o") == f"{job.id} PBS_BATCH workq {job.home}\n"


def test_qsub_dash_dash_runs_the_command_with_its_arguments(submit):
    job = submit(None, "--", "/bin/sh", "-c", "grep -q openpbs-tier /etc/os-release && "
                 "printf '[%s]' \"$@\"; exit 4", "sh", "a b", "c")
    assert job.wait()["Exit_status"] == 4
    assert job.output("o") == "[a b][c]"


def test_a_refused_image_is_one_cbatch_line_and_the_refused_status(submit):
    job = submit("#CBATCH image=nosuch\necho never\n")
    status = job.wait()
    assert job.output("o") == ""
    err = job.output("e")
    assert err.startswith("cbatch: ") and "nosuch" in err and len(err.splitlines()) == 1
    assert status["Exit_status"] == REFUSED
    assert openpbs.accounting(job.id).get("Exit_status") == str(REFUSED)


def test_qdel_ends_the_container_and_openpbs_records_the_kill(submit, node):
    job = submit("trap 'echo got TERM; exit 143' TERM\necho started\nsleep 60 & wait\n")
    openpbs.wait_for(lambda: job.status().get("job_state") == "R", 30, "the job to run")
    openpbs.wait_for(lambda: node.events("container_started", job_id=job.id), 20,
                     "the container")
    time.sleep(1)
    openpbs.run(f"{openpbs.PBS_EXEC}/bin/qdel", job.id, user=job.user)
    status = job.wait()
    assert job.output("o") == "started\ngot TERM\n"
    assert status["Exit_status"] in (143, 271)
    openpbs.wait_for(lambda: node.events("container_removed", job_id=job.id), 20,
                     "the container's removal")


def test_an_array_jobs_subjobs_each_run_in_the_image(submit):
    job = submit("#PBS -J 1-2\n" + IN_IMAGE + "echo index $PBS_ARRAY_INDEX\n")
    base = job.id.replace("[]", "")
    for index in (1, 2):
        sub = openpbs.Job(job.id.replace("[]", f"[{index}]"), job.user)
        assert sub.wait()["Exit_status"] == 0
        assert sub.output("o") == f"in-image\nindex {index}\n", base
