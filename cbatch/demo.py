"""`cbatch demo`: one sample job through momsim (as pbs_mom), cbatch-starter, cbatchd, Docker."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

from cbatch import config, engine as engine_, momjob, rootfs
from cbatch.localnode import LocalNode

DEMO_IMAGE = "cbatch-demo:latest"
SCRIPT = """#!/bin/bash
#PBS -N demo
#CBATCH image=demo
echo "hello from job $PBS_JOBID on $(hostname)"
echo "user: $(id)"
echo "os:   $(. /etc/os-release; echo "$PRETTY_NAME")"
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


def ensure_image(engine: engine_.Engine) -> str:
    try:
        site = config.load()
        pinned = site.image(site.default_image)
        if pinned and engine_.image_id(engine, pinned.ref):
            print(f"demo: using the site's default image {pinned.alias} ({pinned.ref})")
            return engine_.image_id(engine, pinned.ref)
    except config.ConfigError:
        pass
    found = engine_.image_id(engine, DEMO_IMAGE)
    if found:
        print(f"demo: the site's default image is absent; using the local {DEMO_IMAGE}")
        return found
    print(f"demo: the site's default image is absent; building {DEMO_IMAGE} from host binaries")
    return engine_.import_rootfs(engine, rootfs.build(), *DEMO_IMAGE.split(":"))


def run(user: str, keep: bool = False) -> int:
    if os.geteuid() != 0:
        print("cbatch: the demo starts a daemon and a job user; run it as root", file=sys.stderr)
        return 1
    entry = ensure_user(user)
    image = ensure_image(engine_.Engine())
    node = LocalNode({"demo": image}, "demo", {"logging": {"format": "console"}},
                     prefix="cbatch-demo-")
    try:
        node.start()
        spec = node.job_spec(user, "1.demo", SCRIPT, job_name="demo",
                             submit_args="first second")
        job = momjob.MomJob(spec)
        status = job.wait()
        out, err = job.output()
        print(f"--- {job.paths['out']} ---\n{out}--- {job.paths['err']} ---\n{err}"
              f"--- Torque would record exit_status={status} (the script exits 3) ---")
        print(f"demo: job ran as {entry.pw_name} in image {image[:19]}; daemon log: "
              f"{node.log_path}" if keep else "demo: done")
        return 0 if status == 3 else 1
    finally:
        if keep:
            node.stop()
        else:
            node.cleanup()
