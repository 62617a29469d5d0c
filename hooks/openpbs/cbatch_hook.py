"""cbatch's OpenPBS hook: every job and TM task runs through cbatch-starter.

Install (as root, on the server host; the moms get it within seconds):

    qmgr -c "create hook cbatch event='execjob_launch,execjob_end'"
    qmgr -c "import hook cbatch application/x-python default cbatch_hook.py"
    # optional, only to change a default below:
    qmgr -c "import hook cbatch application/x-config default cbatch_hook.json"

execjob_launch: runs as root inside pbs_mom before a job's shell (or `qsub -- cmd`, or a
pbsdsh/TM task) starts. It puts the starter in front (progname, argv) and writes what the
mom knows of the job (queue, owner, exec_host) to <PBS_HOME>/mom_priv/cbatch/<job id>.json,
root's, for cbatchd's policy (the job's own environment is its owner's to set).
execjob_end: removes that record. Config (JSON, every key optional):
{"starter": "/usr/bin/cbatch-starter", "socket": "/run/cbatch/cbatchd.sock"}.
"""

import json
import os

import pbs

DEFAULTS = {"starter": "/usr/bin/cbatch-starter", "socket": None}


def _settings():
    settings = dict(DEFAULTS)
    path = getattr(pbs, "hook_config_filename", None)
    if path:
        with open(path) as f:
            settings.update(json.load(f))
    return settings


def _records_dir():
    return os.path.join(pbs.pbs_conf["PBS_HOME"], "mom_priv", "cbatch")


def _record_path(job_id):
    if "/" in job_id or job_id.startswith("."):  # never a path outside the folder
        raise ValueError("unexpected job id %r" % job_id)
    return os.path.join(_records_dir(), job_id + ".json")


def _write_record(job):
    folder = _records_dir()
    if not os.path.isdir(folder):
        os.mkdir(folder, 0o755)
    facts = {"job_id": job.id, "queue": str(job.queue or ""), "owner": str(job.euser or ""),
             "exec_host": str(job.exec_host or ""), "exec_vnode": str(job.exec_vnode or ""),
             "node": pbs.get_local_nodename()}
    path = _record_path(job.id)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(facts, f)
    os.rename(tmp, path)


def _launch(event, settings):
    starter = settings["starter"]
    progname, argv = event.progname, list(event.argv or [])
    if progname == starter:  # already in front (a re-run of the hook)
        return
    _write_record(event.job)
    # a script job arrives as progname=<shell>, argv=[]; `qsub -- cmd` and TM tasks as
    # progname=<cmd>, argv=[<cmd>, args...]: the starter gets <shell or cmd> [args...]
    event.progname = starter
    event.argv = [starter, progname] + argv[1:]
    if settings.get("socket"):
        event.env["CBATCH_SOCKET"] = settings["socket"]


def _end(event):
    try:
        os.unlink(_record_path(event.job.id))
    except OSError:
        pass


def main():
    event = pbs.event()
    try:
        if event.type == pbs.EXECJOB_LAUNCH:
            _launch(event, _settings())
        elif event.type == pbs.EXECJOB_END:
            _end(event)
    except SystemExit:
        pass
    except Exception as exc:  # never run a job outside its container
        event.reject("cbatch: the cbatch hook failed (%s); tell your admin" % exc)
    event.accept()


main()
