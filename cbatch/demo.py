"""`cbatch demo`: one sample job through momsim (as pbs_mom), cbatch-starter, cbatchd, Docker."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cbatch import config, engine as engine_, momjob, momsim, rootfs

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
    work = Path(tempfile.mkdtemp(prefix="cbatch-demo-"))
    os.chmod(work, 0o755)
    starter = str(momjob.install_starter(work / "starter"))
    cfg_path = work / "cbatch.yaml"
    sock = work / "cbatchd.sock"
    cfg_path.write_text(f"""
socket: {{path: {sock}}}
torque: {{home: {work / 'torque'}}}
images:
  default: demo
  aliases:
    demo: {{ref: "{image}"}}
logging: {{format: console}}
""")
    config.load(cfg_path)
    log = open(work / "cbatchd.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "cbatch.daemon", "--config", str(cfg_path)],
                              stderr=log, start_new_session=True)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        spec = momsim.JobSpec(user=user, job_id="1.demo", torque_home=str(work / "torque"),
                              script=SCRIPT, starter=starter, job_name="demo",
                              submit_args="first second", mom_env={"CBATCH_SOCKET": str(sock)})
        job = momjob.MomJob(spec)
        status = job.wait()
        out, err = job.output()
        print(f"--- {job.paths['out']} ---\n{out}--- {job.paths['err']} ---\n{err}"
              f"--- Torque would record exit_status={status} (the script exits 3) ---")
        print(f"demo: job ran as {entry.pw_name} in image {image[:19]}; daemon log: "
              f"{work / 'cbatchd.log'}" if keep else "demo: done")
        return 0 if status == 3 else 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
        log.close()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
