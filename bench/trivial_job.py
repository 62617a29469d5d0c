"""Benchmark: a trivial job end to end, cbatch vs docker run vs native, interleaved.

Run as root on a node with Docker:  python3 bench/trivial_job.py [rounds]
Prints min/median/max seconds per variant and ratios of the medians.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cbatch import demo, engine, momsim

SCRIPT = "#!/bin/bash\ntrue\n"


def main(rounds: int = 15) -> None:
    user = demo.ensure_user("cbatch-demo").pw_name
    image = demo.ensure_image(engine.Engine())
    work = Path(tempfile.mkdtemp(prefix="cbatch-bench-"))
    os.chmod(work, 0o755)
    sock = work / "cbatchd.sock"
    cfg = work / "cbatch.yaml"
    cfg.write_text(f"socket: {{path: {sock}}}\ntorque: {{home: {work / 'torque'}}}\n"
                   f"images:\n  default: demo\n  aliases:\n    demo: {{ref: '{image}'}}\n")
    starter = str(momsim.install_starter(work / "starter"))
    log = open(work / "cbatchd.log", "w")
    daemon = subprocess.Popen([sys.executable, "-m", "cbatch.daemon", "--config", str(cfg)],
                              stderr=log, start_new_session=True)
    while not sock.exists():
        time.sleep(0.05)
    counter = iter(range(1, 10**6))

    def job(starter_path: str) -> None:
        spec = momsim.JobSpec(user=user, job_id=f"{next(counter)}.bench",
                              torque_home=str(work / "torque"), script=SCRIPT,
                              starter=starter_path, mom_env={"CBATCH_SOCKET": str(sock)})
        j = momsim.MomJob(spec)
        assert j.wait() == 0, j.output()
        j.cleanup()

    variants = {
        "native job (pbs_mom, no starter)": lambda: job("/usr/bin/env"),
        "cbatch job (starter+daemon+docker)": lambda: job(starter),
        "docker run --rm (CLI, bridge)": lambda: subprocess.run(
            ["docker", "run", "--rm", image, "/bin/true"], check=True),
        "docker run --rm --network host": lambda: subprocess.run(
            ["docker", "run", "--rm", "--network", "host", image, "/bin/true"], check=True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for fn in variants.values():
            fn()  # warm up
        for _ in range(rounds):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    cbatch_median = statistics.median(times["cbatch job (starter+daemon+docker)"])
    print(f"{'variant':38} {'min':>7} {'median':>7} {'max':>7}  cbatch/this")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:38} {min(values):7.3f} {med:7.3f} {max(values):7.3f}  {cbatch_median / med:6.2f}x")
    print(f"rounds={rounds}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
