"""`cbatch demo`: one sample job through momsim (as pbs_mom), cbatch-starter, cbatchd, Docker.

It shows a newcomer each piece of evidence: the script, the image, the container, what
the job printed (its root filesystem is the image's, not the host's) and the daemon's
records of the job.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

from cbatch import config, engine as engine_
from cbatch.harness import momjob, rootfs
from cbatch.harness.localnode import LocalNode

DEMO_IMAGE = "cbatch-demo:latest"
SCRIPT = """#!/bin/bash
#PBS -N demo
#CBATCH image=demo
echo "hello from job $PBS_JOBID on $(hostname)"
echo "user: $(id)"
echo "os:   $(. /etc/os-release; echo "$PRETTY_NAME")   programs in /usr/bin: $(ls /usr/bin | wc -l)"
echo "cwd:  $(pwd)   umask: $(umask)   args: $*"
echo "a line for the .e file" >&2
exit 3
"""


def ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        print(f"demo: creating the user {name} to run the job as")
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        return pwd.getpwnam(name)


def ensure_image(engine: engine_.Engine) -> tuple[str, str]:
    """(image id, what it is): the site's default image if the node has it, else a tiny
    image built from a few host programs."""
    try:
        site = config.load()
        pinned = site.image(site.default_image)
        if pinned and engine.image_id(pinned.ref):
            return engine.image_id(pinned.ref), f"the site's default {pinned.ref}"
    except config.ConfigError:
        pass
    found = engine.image_id(DEMO_IMAGE)
    if found:
        return found, f"{DEMO_IMAGE} (the site's default image is not on this node)"
    print(f"demo: the site's default image is absent; building {DEMO_IMAGE} from host binaries")
    built = engine.import_rootfs(rootfs.build(), *DEMO_IMAGE.split(":"))
    return built, f"{DEMO_IMAGE}, just built from host programs"


def _section(title: str, body: str) -> None:
    print(f"== {title} ==\n{body.rstrip()}\n")


def _host_os() -> str:
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def _records(records: list[dict]) -> str:
    """One line per record; a field already shown with the same value is not repeated."""
    seen: dict[str, object] = {}
    lines = []
    for record in records:
        fields = {k: v for k, v in record.items() if k not in ("event", "timestamp", "level")
                  and seen.get(k, object()) != v}
        seen.update(record)
        lines.append(f"{record.get('event')}: " + " ".join(f"{k}={v}" for k, v in fields.items()))
    return "\n".join(lines)


def run(user: str, keep: bool = False) -> int:
    if os.geteuid() != 0:
        print("cbatch: the demo starts a daemon and a job user; run it as root", file=sys.stderr)
        return 1
    entry = ensure_user(user)
    image, what = ensure_image(engine_.Engine())
    node = LocalNode({"demo": image}, "demo", {"logging": {"format": "json"}},
                     prefix="cbatch-demo-")
    try:
        node.start()
        spec = node.job_spec(user, "1.demo", SCRIPT, job_name="demo",
                             submit_args="first second")
        _section(f"the job script: job 1.demo of {entry.pw_name}, arguments: first second",
                 SCRIPT)
        _section("the image", f"alias demo -> {image}\n{what}")
        job = momjob.MomJob(spec)
        status = job.wait()
        out, err = job.output()
        node.wait_for_event("container_removed", job_id="1.demo")  # logged after the end
        records = [r for r in node.records() if r.get("job_id") == "1.demo"]
        started = next((r for r in records if r.get("event") == "container_started"), {})
        _section("the container", f"cbatch-1.demo, id {started.get('container_id', '?')}, "
                                  "removed when the job ended")
        _section(f"what the job printed ({job.paths['out'].name})", out)
        _section(f"its error file ({job.paths['err'].name})", err)
        _section("the proof it ran in the image's root filesystem",
                 f"the host is {_host_os()}; the job saw the os line above (its "
                 "/etc/os-release and /usr/bin are the image's)")
        _section("the daemon's records of the job", _records(records))
        print(f"Torque would record exit_status={status} (the script exits 3)")
        print(f"demo: daemon log kept at {node.log_path}" if keep else "demo: done")
        return 0 if status == 3 else 1
    finally:
        if keep:
            node.stop()
        else:
            node.cleanup()
