"""cbatch benchmark suite: every figure side by side, interleaved, several rounds.

Run as root on a node with Docker:  python3 bench/suite.py [--rounds N] [--quick] [--parts ...]
Prints one table per part: min/median/max and ratios of medians, then every headline
figure beside its baseline ratio and its target. Nothing is asserted. The node is shared
and has 2 cores: absolute figures are noisy; the ratios of interleaved runs are what count.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from cbatch import engine

try:  # the harness modules' home from this version on
    from cbatch.harness import demo, momjob, momsim
    from cbatch.harness.localnode import LocalNode
except ImportError:  # an install made before they moved
    from cbatch import demo, momjob, momsim
    from cbatch.localnode import LocalNode

GIB = 2**30
HERE = Path(__file__).resolve().parent
SUMMARY: list[tuple[str, str, str]] = []  # (figure, measured, target), printed at the end


def summarize(figure: str, measured: str, target: str = "") -> None:
    SUMMARY.append((figure, measured, target))


class Bench:
    def __init__(self) -> None:
        self.user = demo.ensure_user("cbatch-demo")
        self.image = demo.ensure_image(engine.Engine())[0]  # (id, what it is)
        self.node = LocalNode({"demo": self.image}, "demo", prefix="cbatch-bench-")
        self.node.start()
        self.api = docker.APIClient(version="1.41")
        self.count = 0

    def job(self, script: str, native: bool = False) -> tuple[int, float, str, str]:
        self.count += 1
        spec = self.spec(f"{self.count}.bench", script,
                         **({"starter": "/usr/bin/env"} if native else {}))
        j = momjob.MomJob(spec)
        try:
            status = j.wait(900)
            out, err = j.output()
            return status, j.starter_s, out, err
        finally:
            j.cleanup()

    def spec(self, job_id: str, script: str, **kwargs) -> momsim.JobSpec:
        return self.node.job_spec(self.user.pw_name, job_id, script, **kwargs)

    def many(self, n: int) -> list[tuple[int, float]]:
        """n trivial jobs started at once by one pbs_mom process: (status, seconds) each."""
        specs = []
        for _ in range(n):
            self.count += 1
            spec = self.spec(f"{self.count}.bench", "#!/bin/bash\ntrue\n")
            momsim.stage(spec)
            specs.append(dataclasses.asdict(spec))
        out = subprocess.run([sys.executable, "-m", momsim.__name__, "--many", json.dumps(specs)],
                             capture_output=True, text=True, check=True).stdout
        for spec in specs:
            job = momsim.JobSpec(**spec)
            for path in momsim.paths(job).values():
                if path.is_file():
                    path.unlink()
        return [(r["exit_status"], r["starter_s"]) for r in json.loads(out)]

    def sdk_true(self) -> None:
        hc = self.api.create_host_config(network_mode="host", init=True)
        cid = self.api.create_container(self.image, "/bin/true", host_config=hc)["Id"]
        self.api.start(cid)
        self.api.wait(cid)
        self.api.remove_container(cid, force=True)

    def phases(self) -> list[dict]:
        """Per job: the session's phases and the removal that follows the job's end."""
        rows = self.node.records()
        removal = {r["job_id"]: r["removal_ms"] for r in rows if r["event"] == "container_removed"}
        return [{**r["phases_ms"], "removal (after exit)": removal.get(r["job_id"], 0.0)}
                for r in rows if r["event"] == "job_finished"]

    def close(self) -> None:
        self.node.cleanup()
        self.api.close()


def table(title: str, rows: dict[str, list[float]], unit: str, base: str | None = None) -> None:
    print(f"\n## {title}\n{'':44} {'min':>9} {'median':>9} {'max':>9}  {unit}"
          + (f"   ratio to {base}" if base else ""))
    ref = statistics.median(rows[base]) if base else None
    for name, values in rows.items():
        med = statistics.median(values)
        ratio = f"   {med / ref:5.2f}x" if ref else ""
        print(f"{name:44} {min(values):9.3f} {med:9.3f} {max(values):9.3f}{ratio}")


def trivial(b: Bench, rounds: int) -> None:
    cli = ["docker", "run", "--rm"]
    variants = {
        "cbatch job (starter exec -> exit)": lambda: b.job("#!/bin/bash\ntrue\n")[1],
        "native job (no starter)": lambda: b.job("#!/bin/bash\ntrue\n", native=True)[1],
        "docker run --rm (CLI, bridge)": lambda: _timed(cli + [b.image, "/bin/true"]),
        "docker run --rm --network host (CLI)": lambda: _timed(cli + ["--network", "host", b.image, "/bin/true"]),
        "SDK create/start/wait/remove (warm)": lambda: _clock(b.sdk_true),
    }
    for fn in variants.values():
        fn()
    skip = len(b.phases())
    times = {k: [] for k in variants}
    time.sleep(1)  # the warm-up job's removal and hold are over
    cpu0 = _cpu_s(b.node.proc.pid)
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    time.sleep(2)  # the last job's removal, off its path, is counted too
    daemon_ms = (_cpu_s(b.node.proc.pid) - cpu0) * 1000 / rounds
    table("1. trivial job, end to end (seconds)", times, "s", "docker run --rm (CLI, bridge)")
    med = {k: statistics.median(v) for k, v in times.items()}
    job = med["cbatch job (starter exec -> exit)"]
    summarize("trivial job, starter exec -> exit", f"{job:.3f} s")
    summarize("cbatchd CPU per trivial job (user+sys, removal included)", f"{daemon_ms:.1f} ms")
    summarize("  / docker run --rm --network host (CLI)",
              f"{job / med['docker run --rm --network host (CLI)']:.2f}x", "<= 1.0x")
    summarize("  / docker run --rm (CLI, bridge)",
              f"{job / med['docker run --rm (CLI, bridge)']:.2f}x", "<= 0.45x")
    summarize("  / SDK create/start/wait/remove (warm)",
              f"{job / med['SDK create/start/wait/remove (warm)']:.2f}x")
    phases = b.phases()[skip:]
    summarize("phases: created / started / start -> exit", " / ".join(
        f"{statistics.median(p[k] for p in phases if k in p):.1f}"
        for k in ("created", "started", "exited")) + " ms")
    print("   cbatch phases (median ms): " + ", ".join(
        f"{k} {statistics.median(p[k] for p in phases if k in p):.1f}" for k in phases[0]))
    print("   (request: connect to request read; verified: kernel and Torque checks; image: "
          "policy, mounts, spec, image check; created; started: attach and start; exited: "
          "start to the container's exit. The job writes its first output byte itself, "
          "straight into the .OU: no daemon hop.)")


def concurrency(b: Bench, levels: list[int]) -> None:
    print("\n## 2. concurrency: N jobs started at once\n"
          f"{'N':>4} {'cbatch jobs/s':>14} {'p50 s':>7} {'p90 s':>7} {'max s':>7} {'errors':>7}"
          f"   {'SDK jobs/s':>10} {'cbatch/SDK':>10}")
    for n in levels:
        results = b.many(n)
        lat = sorted(r[1] for r in results)
        cbatch_rate = n / lat[-1]  # all forked at once: first fork to last exit
        errors = sum(1 for r in results if r[0] != 0)
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda _: b.sdk_true(), range(n)))
        sdk_rate = n / (time.monotonic() - start)
        print(f"{n:4} {cbatch_rate:14.2f} {lat[len(lat) // 2]:7.3f} {lat[int(len(lat) * 0.9)]:7.3f} "
              f"{lat[-1]:7.3f} {errors:7}   {sdk_rate:10.2f} {cbatch_rate / sdk_rate:10.2f}")
        if n == 32:
            summarize("jobs/s at N=32 / the SDK alone",
                      f"{cbatch_rate / sdk_rate:.2f}x ({cbatch_rate:.1f} / {sdk_rate:.1f})",
                      ">= 0.9x")


_ELAPSED = 's=$(date +%s%N); {body}; e=$(date +%s%N); echo "elapsed $(( (e - s) / 1000 ))"'


def runtime(b: Bench, rounds: int) -> None:
    # CPU seconds (user+sys) as well as wall time: this VM's wall clock is shared and noisy
    cpu = ("TIMEFORMAT='cpu %U %S'; time { " + _ELAPSED.format(
        body="i=0; while ((i < 1500000)); do ((i++)); done") + "; }")
    # the write alone is timed (dd with conv=fsync: data on disk), the rm after it is not;
    # each run starts on a settled disk (_settle), the file in the same home on both sides
    io = _ELAPSED.format(body="dd if=/dev/zero of=$HOME/bench.dat bs=1M count=1024 conv=fsync "
                              "2>/dev/null") + "; rm -f $HOME/bench.dat"
    rows: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, body in (("CPU-bound loop", cpu), ("1 GiB write to home (bind mount)", io)):
            for native in (True, False):
                _settle()
                # LC_ALL=C for both: the host's C.UTF-8 makes bash's parser slower, and the
                # test image has no locales; the same locale compares the runtime alone
                _, _, out, err = b.job(f"#!/bin/bash\nexport LC_ALL=C\n{body}\n", native=native)
                out += err  # bash's `time` report goes to the shell's own stderr
                us = int(re.search(r"elapsed (\d+)", out).group(1))
                rows.setdefault(f"{label}, {'native' if native else 'cbatch'}", []).append(us / 1e6)
                if cpu_s := re.search(r"cpu ([0-9.]+) ([0-9.]+)", out):
                    rows.setdefault(f"{label} CPU s, {'native' if native else 'cbatch'}", []).append(
                        float(cpu_s.group(1)) + float(cpu_s.group(2)))
    table("3. runtime overhead, measured inside the job (seconds)", rows, "s")
    for label in ("CPU-bound loop", "CPU-bound loop CPU s", "1 GiB write to home (bind mount)"):
        n, c = (statistics.median(rows[f"{label}, {k}"]) for k in ("native", "cbatch"))
        print(f"   {label}: cbatch/native = {c / n:.3f}")
    n, c = (statistics.median(rows[f"CPU-bound loop CPU s, {k}"]) for k in ("native", "cbatch"))
    summarize("CPU-bound loop, CPU s / native", f"{c / n:.2f}x", "<= 1.02x")
    n, c = (rows[f"1 GiB write to home (bind mount), {k}"] for k in ("native", "cbatch"))
    summarize("1 GiB write+fsync to home, MB/s / native (settled disk)",
              f"{statistics.median(n) / statistics.median(c):.2f}x "
              f"({GIB / 1e6 / statistics.median(c):.0f} MB/s)", "0.95x - 1.05x")


def output(b: Bench, rounds: int) -> None:
    script = "#!/bin/bash\ndd if=/dev/zero bs=1M count=1024\n"
    # the same dd in a plain `docker run`, into a bind-mounted file beside the .OU: what
    # Docker alone gives a container's writes, cbatch's path left out
    folder = Path(tempfile.mkdtemp(prefix="cbatch-bench-out-", dir=b.node.root))
    plain = ["docker", "run", "--rm", "--network", "host", "-v", f"{folder}:/out", b.image,
             "/bin/sh", "-c", "dd if=/dev/zero bs=1M count=1024 2>&1 >>/out/o; rm -f /out/o"]
    rows: dict[str, list[float]] = {}
    for _ in range(rounds):
        for variant in ("native redirection", "cbatch (into .OU)", "docker run (bind mount)"):
            _settle()
            if variant == "docker run (bind mount)":
                err = subprocess.run(plain, capture_output=True, text=True, check=True).stdout
            else:
                err = b.job(script, native=variant.startswith("native"))[3]
            seconds = float(re.search(r"copied, ([0-9.]+) s", err).group(1))
            rows.setdefault(variant, []).append(GIB / 1e6 / seconds)
    table("4. 1 GiB on stdout into the .OU file (MB/s, as dd measures it in the job)", rows,
          "MB/s", "native redirection")
    native, cbatch = rows["native redirection"], rows["cbatch (into .OU)"]
    docker_run = rows["docker run (bind mount)"]
    pairs = sorted(c / n for n, c in zip(native, cbatch))  # each round's own ratio
    summarize("1 GiB stdout into the .OU / native",
              f"{statistics.median(cbatch) / statistics.median(native):.2f}x "
              f"(per round {pairs[0]:.2f}-{pairs[-1]:.2f}x)", ">= 0.9x, steady")
    summarize("  docker run's dd into a bind-mounted file / native",
              f"{statistics.median(docker_run) / statistics.median(native):.2f}x")
    summarize("  cbatch / docker run (what cbatch's path costs)",
              f"{statistics.median(cbatch) / statistics.median(docker_run):.2f}x")
    before = _docker_logs_bytes()
    print(f"   Docker log storage used by cbatch jobs: {_docker_logs_bytes() - before} bytes "
          "(log driver none; output never passes through dockerd)")


def footprint(b: Bench, jobs: int) -> None:
    idle = _status(b.node.proc.pid)
    running = [momjob.MomJob(b.spec(f"{90000 + i}.bench", "#!/bin/bash\nsleep 30\n"))
               for i in range(jobs)]
    time.sleep(8)
    loaded = [b.job("#!/bin/bash\ntrue\n")[1] for _ in range(5)]
    busy = _status(b.node.proc.pid)
    starter_rss = _status(running[0].starter_pid)["VmRSS"]
    cpu0 = _cpu_s(b.node.proc.pid)
    time.sleep(10)
    cpu_silent = _cpu_s(b.node.proc.pid) - cpu0
    for j in running:
        j.wait(120)
        j.cleanup()
    quiet = [b.job("#!/bin/bash\ntrue\n")[1] for _ in range(5)]
    print("\n## 5. footprint")
    print(f"   starter while its job runs: RSS {starter_rss} (alone, without a daemon: part 6)")
    print(f"   daemon idle: RSS {idle['VmRSS']}, threads {idle['Threads']}")
    print(f"   daemon with {jobs} running jobs: RSS {busy['VmRSS']}, threads {busy['Threads']}")
    print(f"   daemon CPU over 10 s with {jobs} silent jobs: {cpu_silent:.3f} s")
    print(f"   trivial job with {jobs} jobs running: {statistics.median(loaded):.3f} s; "
          f"with none: {statistics.median(quiet):.3f} s (median of 5)")


def starter(rounds: int) -> None:
    """The starter alone, exec to exit with no daemon listening (it fails fast with 125),
    beside the retired Python starter as it was installed and a bare python3 -I."""
    helper = str(_spawn_helper())
    variants = {  # name: (argv, the exit code that shows it ran as meant)
        "floor: a static program doing nothing": ([helper], 2),
        "cbatch-starter (static C)": ([str(momjob.installed_starter()), "/bin/bash"], 125),
        "retired Python starter (python3 -I)": (
            ["/usr/bin/python3", "-I", str(HERE / "python_starter.py"), "/bin/bash"], 125),
        "python3 -I -c pass": (["/usr/bin/python3", "-I", "-c", "pass"], 0),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    rss: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, (argv, expected) in variants.items():
            seconds, kib, status = _spawn(argv)
            if status != expected:
                raise RuntimeError(f"{name} ended with {status}, not {expected}")
            times[name].append(seconds * 1000)
            rss[name].append(kib / 1024)
    base = "retired Python starter (python3 -I)"
    table("6. starter alone: exec to exit, no daemon listening (milliseconds)", times, "ms", base)
    table("6. starter alone: max RSS (MiB, the kernel's ru_maxrss)", rss, "MiB", base)


def through_torque(b: Bench, rounds: int, jobs: int) -> None:
    """qsub to completion through a real Torque, native and cbatch (bench/torque_bench.py)."""
    sys.path.append(str(HERE.parent))  # tests.harness: the real-Torque tier's helpers
    import torque_bench

    why = torque_bench.unavailable()
    if why:
        print(f"\n## 7. through Torque: skipped ({why})")
        summarize(f"{jobs} jobs, qsub to completion / native", f"skipped: {why}", "<= 1.1x")
        return
    results = torque_bench.run(b.image, rounds, jobs)
    base = "native (no $job_starter)"
    makespan = {base: results["native"]["makespan_s"],
                "cbatch ($job_starter cbatch-starter)": results["cbatch"]["makespan_s"]}
    table(f"7. through Torque: {jobs} trivial jobs qsub'd back to back, first qsub to last "
          f"completion (s; {torque_bench.nodes()})", makespan, "s", base)
    latency = {base: results["native"]["latency_s"],
               "cbatch ($job_starter cbatch-starter)": results["cbatch"]["latency_s"]}
    table("7. through Torque: each job's qsub to completion (Torque's state C), all batches",
          latency, "s", base)
    for mode in ("native", "cbatch"):
        print(f"   pbs_mom's steps, {mode} (median ms after the job's start): "
              + torque_bench.describe_steps(torque_bench.mom_steps(results[mode]["jobs"])))
    n, c = (statistics.median(v) for v in makespan.values())
    summarize(f"{jobs} jobs, qsub to completion / native (Torque)",
              f"{c / n:.2f}x ({c:.2f} / {n:.2f} s)", "<= 1.1x")
    # Docker's own floor: the same number of containers, as many at once as Torque runs
    # jobs, with the SDK alone (create/start/wait/remove), no Torque and no cbatch
    slots = torque_bench.slots()
    floors = []
    for _ in range(max(1, rounds // 2)):
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(slots) as pool:
            list(pool.map(lambda _: b.sdk_true(), range(jobs)))
        floors.append(time.monotonic() - start)
    floor = statistics.median(floors)
    print(f"   Docker alone: {jobs} containers, {slots} at a time (SDK create/start/wait/"
          f"remove): {floor:.2f} s, {floor / n:.2f}x the native makespan")
    summarize(f"  Docker alone, {jobs} containers {slots} at a time / native (Torque)",
              f"{floor / n:.2f}x ({floor:.2f} s)")


def _spawn(argv: list[str]) -> tuple[float, int, int]:
    """(seconds from fork to reaping, max RSS in KiB, exit code), through bench/spawn.c,
    with stdin "x\\n" as pbs_mom's line and no daemon to reach."""
    out = subprocess.run([str(_spawn_helper()), *argv], input=b"x\n", capture_output=True, check=True,
                         env={"CBATCH_SOCKET": "/nonexistent"}).stdout.split()
    return int(out[0]) / 1e9, int(out[1]), int(out[2])


def _spawn_helper() -> Path:
    global _SPAWN
    if _SPAWN is None:
        _SPAWN = Path(tempfile.mkdtemp(prefix="cbatch-bench-")) / "spawn"
        subprocess.run(["cc", "-static", "-O2", "-o", str(_SPAWN), str(HERE / "spawn.c")], check=True)
    return _SPAWN


_SPAWN: Path | None = None


def _settle(quiet_s: float = 1.0, timeout_s: float = 60, returned_s: float = 4.0) -> None:
    """Start each I/O run from the same state: page cache dropped, the memory it held
    given back to the host, and the disk idle.

    Deleting the previous run's 1 GiB on this ext4 (mounted with discard) makes the next
    sync issue a 1 GiB discard that the virtual disk works through for up to seconds; a
    job started at once (a native one: 10 ms) wrote during it, a container 250 ms later
    mostly did not. So wait until no block device has read, written or discarded a
    sector for quiet_s.

    This VM's balloon (virtio_balloon) reports freed memory to the host about 2 s after
    it is freed, and a page the host took back costs a fault on the host when it is next
    written: the same native `dd` of 1 GiB into the page cache ran at 3.7 GB/s when
    started 0.1 s after the cache drop and at 0.54 GB/s when started 4 s after it. A job
    started at once (native) won that race, one started 150 ms later (a container) lost
    it more often. So the run also starts returned_s after the drop, when the memory is
    back with the host for both.
    """
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    dropped = time.monotonic()
    deadline = dropped + timeout_s
    last, since = _disk_activity(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _disk_activity()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s and time.monotonic() - dropped >= returned_s:
            return


def _disk_activity() -> tuple:
    """Every disk's I/O counters (/proc/diskstats, without the time fields)."""
    rows = []
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if not f[2].startswith(("loop", "ram")):
            rows.append((f[2], f[5], f[9], f[11], *f[16:17]))
    return tuple(rows)


def _timed(cmd: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.monotonic() - start


def _clock(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if ":\t" in line)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _docker_logs_bytes() -> int:
    root = Path("/var/lib/docker/containers")
    return sum(f.stat().st_size for f in root.glob("*/*-json.log")) if root.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and levels")
    parts = ["trivial", "concurrency", "runtime", "output", "footprint", "starter", "torque"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts,
                        help="run only these parts (starter needs no Docker)")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    print(f"cbatch benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
          f"{os.uname().release}, rounds={rounds}")
    if set(args.parts) - {"starter"}:
        b = Bench()
        try:
            print(f"docker {b.api.version()['Version']}")
            if "trivial" in args.parts:
                trivial(b, rounds)
            if "concurrency" in args.parts:
                concurrency(b, [1, 4, 16] if args.quick else [1, 4, 16, 32, 64])
            if "runtime" in args.parts:
                runtime(b, max(3, rounds // 2))
            if "output" in args.parts:
                output(b, max(3, rounds // 2))
            if "footprint" in args.parts:
                footprint(b, 16 if args.quick else 64)
            if "torque" in args.parts:
                through_torque(b, rounds, 50)
        finally:
            b.close()
    if "starter" in args.parts:
        starter(rounds * 5)
    print("\n## summary (medians; ratios from interleaved runs on a shared 2-core node)")
    print(f"{'figure':58} {'measured':32} target")
    for figure, measured, target in SUMMARY:
        print(f"{figure:58} {measured:32} {target}")


if __name__ == "__main__":
    main()
