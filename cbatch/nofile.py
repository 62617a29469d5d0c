"""The daemon's open-file budget: its connection bound must fit RLIMIT_NOFILE.

A daemon out of fds cannot accept, so the bound is checked against the limit at start
and at each reload, and the soft limit raised to the hard one when that is enough.
"""

from __future__ import annotations

import resource

from cbatch.config import Config
from cbatch.errors import ConfigError

# What one connection holds at most: its socket and the two fds passed with the request
# (3 while the request is read); while its job runs, also its Docker client's connections,
# the attach stream and the job's exit FIFO. Measured with 8 running jobs: 9.75 each.
FDS_PER_CONNECTION = 12
RESERVE_FDS = 64  # listener, wakeup pair, log, the sweep's Docker client, a reload


def needed(cfg: Config) -> int:
    return cfg.max_connections * FDS_PER_CONNECTION + RESERVE_FDS


def ensure(cfg: Config) -> tuple[int, int]:
    """Make the soft limit cover cfg's bound; returns (soft limit before, soft limit now).

    Raises:
        ConfigError: even the hard limit is too low; says what to set instead.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = needed(cfg)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft, soft
    if hard == resource.RLIM_INFINITY or hard >= need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return soft, hard
    fits = max(0, (hard - RESERVE_FDS) // FDS_PER_CONNECTION)
    raise ConfigError("socket.max_connections",
                      f"{cfg.max_connections} connections need {need} open files "
                      f"({FDS_PER_CONNECTION} each and {RESERVE_FDS} spare) but cbatchd may "
                      f"open only {hard} (RLIMIT_NOFILE); set socket.max_connections to at "
                      f"most {fits}, or raise LimitNOFILE= in cbatchd.service")
