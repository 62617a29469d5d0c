"""Jobs across two nodes (Torque's multi-mom mode on this host: torque-multimom.sh): every
TM task, on the mother superior and on the sister, runs in the job's container."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.harness import dockerproxy, images, torque
from tests.torque.conftest import IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.torque]


@pytest.fixture(scope="module")
def two_nodes(node, mom, tq_image, mpi_image):
    """The cluster as two nodes, pbs_mom on the starter, a cbatchd that gives containers
    the node's pbsdsh; back to one node afterwards."""
    script = torque.kit() / "torque-multimom.sh"
    subprocess.run(["bash", str(script)], check=True, capture_output=True, timeout=300)
    names = torque.multi_mom()
    torque.restart_mom(torque.mom_config(True))
    node.kill()
    multi = torque.CbatchNode({IMAGE: tq_image, "torque-mpi": mpi_image}, IMAGE,
                              {"container": {"sweep_interval_s": 5},
                               "torque": {"clients": [str(torque.BIN / "pbsdsh")]}})
    multi.start()
    yield names, multi
    multi.cleanup()
    subprocess.run(["bash", str(script), "--undo"], check=True, capture_output=True,
                   timeout=300)
    mom.mode = None  # the single pbs_mom came back with whatever config: set it again
    mom.use(True)
    node.start()


def tasks_of(daemon: torque.CbatchNode, job_id: str) -> list[dict]:
    return [r for r in daemon.events("job_finished") if r["job_id"] == job_id]


def test_pbsdsh_tasks_run_in_the_jobs_image_on_both_nodes(two_nodes, submit):
    names, daemon = two_nodes
    script = ("#!/bin/bash\n"
              "echo $(cat $PBS_NODEFILE)\n"
              "pbsdsh -u bash -c 'echo task $PBS_TASKNUM node $PBS_NODENUM "
              "$(grep -h ^ID= /etc/os-release) $(id -un) $(id -G | wc -w)'\n"
              "pbsdsh -n 1 bash -c 'exit 7'\n")
    job = submit(script, "-l", "nodes=2:ppn=1")
    assert job.exit_status(timeout=120) == 0
    out = job.output("o").splitlines()
    assert sorted(out[0].split()) == names, (out, job.output("e"))
    tasks = sorted(line for line in out[1:] if line.startswith("task "))
    assert len(tasks) == 2, out
    for line in tasks:
        assert f"ID={IMAGE} {job.user.pw_name}" in line, line
    assert {line.split()[3] for line in tasks} == {"0", "1"}  # one task on each node
    assert "task 3 exit status 7" in job.output("e") or "exit status 7" in job.output("e")
    finished = tasks_of(daemon, job.job_id)
    assert len(finished) >= 4  # the top task and three TM tasks, each in a container
    assert {r["image"] for r in finished} == {IMAGE}


MPI_LAUNCHER = """#!/bin/sh
# MPICH's hydra starts its proxy on each node through this: a TM task, by pbsdsh
node=$1; shift
exec pbsdsh -h "$node" /bin/sh -c "$*"
"""


@pytest.fixture(scope="module")
def mpi_image(tq_api, tmp_path_factory):
    """An image with MPICH (hydra, UCX and its transports) and an MPI program, and nothing
    of Torque: pbsdsh comes from the node (torque.clients)."""
    folder = tmp_path_factory.mktemp("mpi")
    program = folder / "mpi-sum"
    subprocess.run(["mpicc", "-O2", "-o", str(program),
                    str(Path(__file__).with_name("mpi_sum.c"))], check=True)
    files = {"/usr/local/bin/mpi-sum": (program.read_bytes(), 0o755),
             "/usr/local/bin/mpi-launch": (MPI_LAUNCHER.encode(), 0o755)}
    plugins = sorted(Path("/usr/lib/x86_64-linux-gnu/ucx").glob("*.so*"))
    for binary in (program, *plugins):
        for library in (binary, *images.libraries(binary)):
            if library != program:
                files[str(library)] = (library.read_bytes(), 0o755)
    image_id = images.build(tq_api, "torque-mpi", files,
                            tools=("mpiexec.hydra", "hydra_pmi_proxy"))
    yield image_id
    images.remove(tq_api, "torque-mpi")


def test_an_mpi_program_across_both_nodes(two_nodes, submit, mpi_image):
    """Every rank in a container of the image the job chose (#CBATCH), on both nodes: the
    sister's cbatchd asks the mother superior's for the job's directives."""
    names, daemon = two_nodes
    script = ("#!/bin/bash\n#CBATCH image=torque-mpi\n"
              "mapfile -t nodes < $PBS_NODEFILE; hosts=$(IFS=,; echo \"${nodes[*]}\")\n"
              "mpiexec.hydra -launcher rsh -launcher-exec /usr/local/bin/mpi-launch "
              "-hosts $hosts -n 2 -ppn 1 /usr/local/bin/mpi-sum\n")
    job = submit(script, "-l", "nodes=2:ppn=1")
    assert job.exit_status(timeout=180) == 0, job.output("e")
    ranks = sorted(line for line in job.output("o").splitlines() if line.startswith("rank"))
    assert len(ranks) == 2 and all(line.endswith("sum 3") for line in ranks), ranks
    finished = tasks_of(daemon, job.job_id)
    assert {r["image"] for r in finished} == {"torque-mpi"}
    assert [r for r in finished if r["task"] > 1]  # hydra's proxy, a TM task by pbsdsh
    # the sister learnt the image from the mother superior's cbatchd
    assert daemon.events("sister_answered", job_id=job.job_id)


SISTER = "mapfile -t nodes < $PBS_NODEFILE; sister=${nodes[1]}\n"  # exec_host: MS first


def test_qdel_of_a_two_node_job_leaves_no_container_on_either_node(two_nodes, submit,
                                                                   tq_api):
    names, daemon = two_nodes
    job = submit("#!/bin/bash\n" + SISTER + "pbsdsh -h $sister sleep 300 &\nsleep 300\n",
                 "-l", "nodes=2:ppn=1")
    torque.wait_for(lambda: [r for r in daemon.events("container_started", job_id=job.job_id)
                             if r["task"] > 1], 60, "the sister's task to start")
    torque.qdel(job.job_id)
    assert job.exit_status() == 271
    torque.wait_for(lambda: not torque.containers(tq_api, job.job_id), 30,
                    "every container of the job to be removed")


def test_walltime_kill_of_a_two_node_job_leaves_no_container(two_nodes, submit, tq_api):
    names, daemon = two_nodes
    job = submit("#!/bin/bash\n" + SISTER + "pbsdsh -h $sister sleep 300 &\nsleep 300\n",
                 "-l", "nodes=2:ppn=1,walltime=00:00:04")
    assert job.exit_status(timeout=4 + 3 * torque.CHECK_POLL_S + 30) == -11
    assert "=>> PBS: job killed: walltime" in job.output("e")
    torque.wait_for(lambda: not torque.containers(tq_api, job.job_id), 30,
                    "every container of the job to be removed")


def test_a_killed_sister_task_and_a_sister_without_cbatchd(two_nodes, submit, tq_api):
    """A sister task's starter SIGKILLed: its container goes, pbsdsh reports the task as
    natively. A task started while the node's cbatchd is down: one cbatch: line, never a
    task outside a container; the job goes on, as natively when a task fails."""
    names, daemon = two_nodes
    job = submit("#!/bin/bash\n" + SISTER +
                 "pbsdsh -h $sister sleep 300\necho after-kill\n"
                 "while [ ! -e ~/cbatchd-is-down ]; do sleep 0.2; done\n"
                 "pbsdsh -h $sister bash -c 'echo ran-outside-a-container'\necho after-down\n"
                 "sleep 4\n", "-l", "nodes=2:ppn=1")
    started = torque.wait_for(
        lambda: [r for r in daemon.events("container_started", job_id=job.job_id)
                 if r["task"] > 1], 60, "the sister's task to start")[0]
    os.kill(started["peer_pid"], signal.SIGKILL)
    torque.wait_for(lambda: not [c for c in torque.containers(tq_api, job.job_id)
                                 if c["Id"].startswith(started["container_id"])], 30,
                    "the killed task's container to go")
    torque.wait_for(lambda: "after-kill" in (job.output_now("o") or ""), 30, "the job to go on")
    daemon.kill(signal.SIGKILL)
    flag = Path(job.user.pw_dir) / "cbatchd-is-down"
    flag.touch()
    try:
        torque.wait_for(lambda: "after-down" in (job.output_now("o") or ""), 60,
                        "the job to go on without the sister's task")
    finally:
        flag.unlink()
        daemon.start()
    assert job.exit_status() == 0  # pbsdsh reports a failed task, and exits 0, natively too
    out, err = job.output("o"), job.output("e")
    assert "ran-outside-a-container" not in out
    assert "cbatch: cannot reach cbatchd" in err and "exit status 125" in err, err
    assert "exit status 265" in err or "exit status 137" in err, err  # the SIGKILLed task


def test_a_sister_task_while_docker_is_unreachable(two_nodes, submit, tmp_path):
    """Docker gone while the job runs (a cut proxy in front of cbatchd's Docker socket:
    one host has one engine for both nodes, so the job's own container is already up):
    the sister's task fails with one cbatch: line and 125, never outside a container, and
    the job goes on as natively when a task fails."""
    names, daemon = two_nodes
    os.chmod(tmp_path, 0o755)
    proxy = dockerproxy.DockerProxy(tmp_path / "docker.sock")
    daemon.kill()
    daemon.env["DOCKER_HOST"] = proxy.url
    daemon.start()
    flag = None
    try:
        job = submit("#!/bin/bash\n" + SISTER +
                     "while [ ! -e ~/docker-is-cut ]; do sleep 0.2; done\n"
                     "pbsdsh -h $sister bash -c 'echo ran-outside-a-container'\n"
                     "echo after-task\n", "-l", "nodes=2:ppn=1")
        daemon.wait_for_event("job_adopted", job_id=job.job_id, timeout=60)  # its last call
        proxy.cut()
        flag = Path(job.user.pw_dir) / "docker-is-cut"
        flag.touch()
        failed = daemon.wait_for_event("job_failed", job_id=job.job_id, timeout=60)
        assert failed["exit_status"] == 125 and failed["error"] == "EngineUnavailable"
        proxy.restore()
        assert job.exit_status() == 0  # pbsdsh reports the failed task and exits 0, natively too
        out, err = job.output("o"), job.output("e")
        assert "ran-outside-a-container" not in out and "after-task" in out
        lines = [line for line in err.splitlines() if line.startswith("cbatch:")]
        assert len(lines) == 1 and "not reachable" in lines[0], err
        assert "exit status 125" in err, err
    finally:
        proxy.restore()
        if flag is not None:
            flag.unlink(missing_ok=True)
        daemon.kill()
        daemon.env.pop("DOCKER_HOST", None)
        daemon.start()
        proxy.close()


def _seconds(times_line: tuple[str, str]) -> float:
    """user + sys from bash's `times` ("0m5.120s", "0m0.004s")."""
    return sum(int(t[:t.index("m")]) * 60 + float(t[t.index("m") + 1:-1]) for t in times_line)


def test_cpu_of_both_nodes_adds_up_as_natively(two_nodes, mom, submit):
    """resources_used.cput of a job burning CPU on both nodes at once, through cbatch and
    natively: each sister's usage reaches the mother superior and is summed."""
    burn = "i=0; while ((i < 3000000)); do ((i++)); done; times"
    script = ("#!/bin/bash\n" + SISTER + f"pbsdsh -h $sister bash -c '{burn}' &\n"
              f"{burn}\nwait\necho done\n")
    usage = {}
    for starter in (False, True):
        torque.restart_mom(torque.mom_config(starter))
        job = submit(script, "-l", "nodes=2:ppn=1")
        assert job.exit_status(timeout=180) == 0, job.output("e")
        # what each node's shell says it used (times' first line: its own user and sys)
        used = sum(_seconds(m) for m in re.findall(r"^(\S+) (\S+)\n\S+ \S+$",
                                                    job.output("o"), re.M))
        usage[starter] = (torque.parse_duration(job.accounting()["resources_used.cput"]),
                          used)
    # against what the job used (this VM's CPU speed varies from run to run): Torque keeps
    # whole seconds per node, natively as through cbatch, so up to 2 s go (1 per node)
    for recorded, used in usage.values():
        assert used >= 4 and used - 2.5 <= recorded <= used + 1, usage
