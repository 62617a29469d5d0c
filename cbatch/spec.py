"""Turn a job, its decision and its mounts into a container spec (pure).

The only module that knows docker-py's parameter names and the Engine API's mount and
ulimit shapes; engine.py passes what it writes on to Docker unchanged.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import cbatch
from cbatch.container import STREAM, Bind, ContainerSpec, Labels, Output
from cbatch.keeper import EXIT_PATH, KEEPER_PATH
from cbatch.policy import Decision
from cbatch.batch import Job

_LOGIN_BY_ARGV0 = ("bash", "zsh", "ksh", "mksh")  # shells whose `exec -a` makes "-name"


def labels(job: Job, image_alias: str) -> dict[str, str]:
    return Labels(job_id=job.job_id, task=str(job.task), user=job.user, uid=str(job.uid),
                  starter_pid=str(job.peer.pid), starter_start=str(job.peer.start_ticks),
                  image=image_alias, version=cbatch.__version__).for_docker()


def command(job: Job, stdout: Output, stderr: Output) -> list[str]:
    """The container's command: a short prologue, then the job's shell as pbs_mom runs it.

    The prologue restores what pbs_mom gives a native job and Docker does not: the umask,
    SIGPIPE ignored (inherited from Torque's pbs_mom; OpenPBS's leaves it at its default),
    no HOSTNAME in the environment, the output files, and for the job's top task
    a login shell with argv[0] "-bash", as pbs_mom runs it without a job starter, reading
    what pbs_mom wrote on stdin. That line travels inside the command (a here-document,
    a pipe in bash 5.1 and later, as pbs_mom's is), so no daemon has to be alive to feed it.
    """
    steps = [f"umask {job.umask:04o}"] + (["trap '' PIPE"] if job.sigpipe_ignored else [])
    if "HOSTNAME" not in job.env:  # Docker exports it; a job's shell only sets it
        steps.append("unset HOSTNAME")
    if "BASH_ENV" in job.env:  # only the job's shells may read it, not this prologue
        steps.append(f"export BASH_ENV={shlex.quote(job.env['BASH_ENV'])}")
    redirects = _redirect(1, stdout) + _redirect(2, stderr)
    if redirects:
        steps.append("exec" + redirects)
    shell, args = job.argv[0], list(job.argv[1:])
    name = os.path.basename(shell)
    if job.task > 1 or job.direct:  # TM task, `qsub -- cmd`: the argv itself, no shell
        steps.append('exec "$@" </dev/null')
        return ["/bin/sh", "-c", "; ".join(steps), "cbatch", *job.argv]
    # an interactive job's shell reads its terminal (the container's own); a batch job's,
    # what pbs_mom wrote
    stdin = "" if job.interactive else _here_document(job.stdin)
    if name in _LOGIN_BY_ARGV0:
        steps.append(shlex.join(["exec", "-a", "-" + name, shell, *args]) + stdin)
        return [shell, "-c", "; ".join(steps)]
    steps.append(shlex.join(["exec", shell, "-l", *args]) + stdin)
    return ["/bin/sh", "-c", "; ".join(steps)]


def _here_document(data: bytes) -> str:
    """Redirect the shell's stdin to exactly these bytes (empty: /dev/null)."""
    if not data:
        return " </dev/null"
    text = data.decode("utf-8", "surrogateescape")
    if not text.endswith("\n"):
        text += "\n"
    delimiter = "CBATCH_STDIN"
    while delimiter in text:
        delimiter += "_"
    return f" <<'{delimiter}'\n{text}{delimiter}\n"


def _redirect(fd: int, out: Output) -> str:
    if out.mode == "file" and out.same_as_stdout and fd == 2:
        return " 2>&1"
    if out.mode == "file":
        return f" {fd}>>{shlex.quote(str(out.path))}"
    if out.mode == "null":
        return f" {fd}>/dev/null"
    return ""


def build(job: Job, decision: Decision, binds: tuple[Bind, ...], stdout: Output = STREAM,
          stderr: Output = STREAM, extra_binds: tuple[Bind, ...] = (),
          cgroup_parent: str | None = None, keeper: tuple[Path, Path] | None = None,
          carry_output: bool = False) -> ContainerSpec:
    """The container for a job. `keeper` is (the cbatch-keeper binary, the job's exit
    FIFO) on the host: the keeper then runs the job's command and reports its end."""
    # BASH_ENV is handed over by the prologue (see command), so the prologue's own bash
    # does not source it: natively the login shell never reads it
    env = {k: v for k, v in job.env.items() if k not in decision.drop_env and k != "BASH_ENV"}
    mounts = [{"Type": "bind", "Source": str(b.source), "Target": str(b.target),
               "ReadOnly": b.read_only, "BindOptions": {"Propagation": "rprivate"}}
              for b in (*binds, *extra_binds)]
    entrypoint = command(job, stdout, stderr)
    if keeper is not None:
        binary, fifo = keeper
        mounts += [{"Type": "bind", "Source": str(binary), "Target": str(KEEPER_PATH),
                    "ReadOnly": True, "BindOptions": {"Propagation": "rprivate"}},
                   {"Type": "bind", "Source": str(fifo), "Target": str(EXIT_PATH),
                    "ReadOnly": False, "BindOptions": {"Propagation": "rprivate"}}]
        # -s: the keeper carries streamed output itself and says when it has all gone
        entrypoint = [str(KEEPER_PATH), *(["-s"] if carry_output else []), str(EXIT_PATH),
                      *entrypoint]
    ulimits = [{"Name": name, "Soft": soft, "Hard": hard}
               for name, (soft, hard) in sorted(job.rlimits.items())]
    host_config: dict = {
        "mounts": mounts,
        "network_mode": decision.network,
        # pid 1 is cbatch-keeper (passes signals on, reaps, holds the job's times); a
        # container built without it (keeper=None) gets docker-init instead
        "init": keeper is None,
        "privileged": False,
        # writes outside the job's mounts go to its bounded /tmp (storage.py), never into
        # Docker's own storage
        "read_only": decision.read_only_root,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": decision.pids_limit,
        "group_add": [str(g) for g in job.groups],
        "ulimits": ulimits,
        # never through Docker's log store: output goes to the job's own files
        "log_config": {"Type": "none", "Config": {}},
        "cpu_shares": 1024 * job.slots,  # Torque's slots, never the job's PBS_NUM_PPN
    }
    if cgroup_parent:
        host_config["cgroup_parent"] = cgroup_parent
    rss = job.rlimits.get("rss", (-1, -1))[0]
    if decision.memory_limit and rss > 0:
        host_config["mem_limit"] = rss
        host_config["memswap_limit"] = rss
    job_labels = labels(job, decision.image.alias)
    create = {
        "image": decision.image.ref,
        "entrypoint": entrypoint,  # the image's ENTRYPOINT is ignored
        "user": f"{job.uid}:{job.gid}",
        "environment": env,
        "working_dir": str(job.cwd),
        "tty": job.interactive,
        "stdin_open": job.interactive,
        "labels": job_labels,
        "name": job.container_name,
    }
    if decision.network != "host":
        create["hostname"] = os.uname().nodename.split(".")[0]
    return ContainerSpec(name=job.container_name, create=create, host_config=host_config,
                         labels=job_labels)

