"""Load /etc/cbatch.yaml strictly into frozen dataclasses. Only this module imports yaml.

Unknown keys, wrong types and dangling references are errors that name the key path and
the line, so `cbatch check-config` can point the admin at the exact spot.
"""

from __future__ import annotations

import dataclasses
import re
import sysconfig
from pathlib import Path
from typing import Any

import yaml

from cbatch import batch
from cbatch.errors import ConfigError

DEFAULT_PATH = Path("/etc/cbatch.yaml")
NETWORK_MODES = ("host", "bridge", "none")
PULL_POLICIES = ("never", "missing")
LOG_FORMATS = ("json", "console")
_PINNED = re.compile(r"^(sha256:[0-9a-f]{64}|[^\s@]+@sha256:[0-9a-f]{64})$")
_KEEPER = Path("/usr/libexec/cbatch/cbatch-keeper")  # the Debian package's
if not _KEEPER.exists():  # installed by setup.py alone: beside this Python's scripts
    _KEEPER = Path(sysconfig.get_path("scripts")) / "cbatch-keeper"


@dataclasses.dataclass(frozen=True, slots=True)
class Audience:
    """Who may use an image or mount; all empty means everyone."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()

    @property
    def is_everyone(self) -> bool:
        return not (self.users or self.groups or self.queues)


@dataclasses.dataclass(frozen=True, slots=True)
class Image:
    alias: str
    ref: str  # repo@sha256:... or a local image id sha256:...
    audience: Audience


@dataclasses.dataclass(frozen=True, slots=True)
class SiteMount:
    path: Path
    target: Path
    read_only: bool
    optional: bool
    audience: Audience


PBS_ATTACH = Path("/opt/pbs/bin/pbs_attach")  # OpenPBS's default PBS_EXEC


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    socket_path: Path = Path("/run/cbatch/cbatchd.sock")
    socket_mode: int = 0o666
    socket_group: str | None = None
    admin_group: str | None = None
    request_timeout_s: float = 10.0
    max_connections_per_user: int = 512
    max_connections: int = 1024  # overall; must fit RLIMIT_NOFILE (nofile.py)
    batch_system: str = "torque"  # the module of cbatch/batch/ that proves jobs
    pbs_home: Path = Path("/var/spool/torque")  # PBS_HOME: torque.home or openpbs.home
    require_pbs_mom_parent: bool = True  # batch.require_pbs_mom_parent
    job_cgroup: bool = True  # put containers under Torque's torque/<job id> cgroup if present
    # adopt the container when no job cgroup: torque.pbs_track, or openpbs.pbs_attach
    pbs_track: Path | None = Path("/usr/local/bin/pbs_track")
    clients: tuple[Path, ...] = ()  # batch.clients: pbsdsh & co. in every container
    sister_port: int | None = 1019  # where sisters ask for a job's directives (sisters.py)
    allow_root: bool = False
    min_uid: int = 1000
    drop_env: tuple[str, ...] = ()
    workdir_roots: tuple[Path, ...] = (Path("/"),)
    default_image: str = ""
    pull: str = "never"
    images: tuple[Image, ...] = ()
    mounts: tuple[SiteMount, ...] = ()
    network: str = "host"
    pids_limit: int = 4096
    engine_retry_s: float = 60.0
    sweep_interval_s: float = 60.0
    memory_from_rlimit: bool = True
    read_only_root: bool = True  # the image's root read-only: jobs write only to mounts
    tmp_bytes: int | None = 2**30  # each job's /tmp + /var/tmp (a tmpfs); None: the image's
    keeper: Path = _KEEPER
    log_format: str = "json"
    log_level: str = "info"
    metrics_textfile: Path | None = None  # node_exporter's textfile collector; None: off
    metrics_interval_s: float = 15.0
    source: Path | None = None

    def image(self, alias: str) -> Image | None:
        return next((i for i in self.images if i.alias == alias), None)

    @property
    def torque_home(self) -> Path:
        """pbs_home's former name."""
        return self.pbs_home

    @property
    def placeholder_dir(self) -> Path:
        """Where the daemon mounts job output files for Docker (beside its socket)."""
        return self.socket_path.parent / "out"

    @property
    def trqauth_dir(self) -> Path:
        """The folder of the daemon's relay in front of trqauthd (trqauth.py)."""
        return self.socket_path.parent / "trqauthd"

    @property
    def clients_dir(self) -> Path:
        """Where the daemon gathers the Torque clients for containers (clients.py)."""
        return self.socket_path.parent / "torque-clients"

    @property
    def exit_dir(self) -> Path:
        """Where the daemon keeps each job's exit FIFO (keeper.py), beside its socket."""
        return self.socket_path.parent / "exit"

    @property
    def uses_groups(self) -> bool:
        """Does any image or mount audience name groups (worth resolving gids to names)?"""
        return any(a.audience.groups for a in (*self.images, *self.mounts))


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = _Mapping()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise ConfigError(str(key), "duplicate key", key_node.start_mark.line + 1)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    return mapping


class _Mapping(dict):
    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Section:
    """A mapping being read: hands out typed values and rejects what is left over."""

    def __init__(self, data: Any, path: str, line: int | None) -> None:
        if data is None:
            data = _Mapping()
        if not isinstance(data, dict):
            raise ConfigError(path or "(top level)", "must be a mapping", line)
        self.data, self.path, self.line = data, path, line
        self.lines = getattr(data, "lines", {})
        self.used: set[str] = set()

    def _where(self, key: str) -> tuple[str, int | None]:
        return (f"{self.path}.{key}" if self.path else key), self.lines.get(key, self.line)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind is int or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(*self._at(key, f"must be {names}, not {value!r}"))
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise ConfigError(*self._at(key, f"must be one of {', '.join(choices)}, not {value!r}"))
        return value

    def names(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise ConfigError(*self._at(key, "must be a list of names"))
        return tuple(str(v) for v in value)

    def section(self, key: str) -> _Section:
        self.used.add(key)
        path, line = self._where(key)
        return _Section(self.data.get(key), path, line)

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(*self._at(key, problem))

    def _at(self, key: str, problem: str) -> tuple[str, str, int | None]:
        path, line = self._where(key)
        return path, problem, line

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise ConfigError(*self._at(key, "unknown key"))


def _audience(sec: _Section) -> Audience:
    return Audience(sec.names("users"), sec.names("groups"), sec.names("queues"))


def _absolute(sec: _Section, key: str, default: str | None) -> Path | None:
    value = sec.get(key, str, default)
    if value is None:
        return None
    if not value.startswith("/"):
        raise sec.fail(key, f"must be an absolute path, not {value!r}")
    return Path(value)


def _roots(sec: _Section, key: str) -> tuple[Path, ...]:
    roots = sec.names(key) or ("/",)
    for root in roots:
        if not root.startswith("/"):
            raise sec.fail(key, f"must list absolute paths, not {root!r}")
    return tuple(Path(r) for r in roots)


def _paths(sec: _Section, key: str) -> tuple[Path, ...]:
    paths = sec.names(key)
    for path in paths:
        if not path.startswith("/"):
            raise sec.fail(key, f"must list absolute paths, not {path!r}")
    return tuple(Path(p) for p in paths)


def _size(sec: _Section, key: str, default: int | None) -> int | None:
    """A size in bytes: an integer, or digits with k, m, g or t (binary units, as tmpfs
    reads them); null when the key says null."""
    if key in sec.data and sec.data[key] is None:
        sec.used.add(key)
        return None
    value = sec.get(key, (int, str), default)
    if isinstance(value, bool):
        raise sec.fail(key, f"must be a size like 1g, not {value!r}")
    if isinstance(value, str):
        match = re.fullmatch(r"([0-9]+)([kmgt]?)", value.strip().lower())
        if not match:
            raise sec.fail(key, f"must be a size like 1g, 512m or a number of bytes, "
                                f"not {value!r}")
        value = int(match[1]) * 1024 ** " kmgt".index(match[2] or " ")
    if value is not None and value < 2**20:
        raise sec.fail(key, "must be at least 1m")
    return value


def _mode(sec: _Section, key: str, default: int) -> int:
    value = sec.get(key, (int, str), default)
    try:
        mode = int(value, 8) if isinstance(value, str) else value
    except ValueError:
        raise sec.fail(key, f"must be an octal mode like \"0666\", not {value!r}") from None
    if not 0 <= mode <= 0o777:
        raise sec.fail(key, "must be a permission mode between 0000 and 0777")
    return mode


def _home(system: str, torque: _Section, openpbs: _Section, default: Path) -> Path:
    """PBS_HOME of the batch system served: torque.home or openpbs.home."""
    torque_home = _absolute(torque, "home", str(default))
    openpbs_home = _absolute(openpbs, "home", "/var/spool/pbs")
    return openpbs_home if system == "openpbs" else torque_home


def _moved(new: _Section, old: _Section, key: str, read: Any) -> Any:
    """A key that serves every batch system (batch.<key>), still accepted under torque:
    (its former place), never in both."""
    if key in old.data:
        if key in new.data:
            raise old.fail(key, f"is batch.{key} now; keep only that one")
        return read(old, key)
    return read(new, key)


def parse(data: Any, source: Path | None = None) -> Config:
    """Validate a loaded YAML document into a Config."""
    top = _Section(data, "", None)

    sock = top.section("socket")
    batch_ = top.section("batch")
    system = batch_.get("system", str, "torque")
    if not batch.is_system(system):
        raise batch_.fail("system", f"must be a batch system cbatch knows (torque, openpbs), "
                                    f"not {system!r}")
    torque = top.section("torque")
    openpbs = top.section("openpbs")
    jobs = top.section("jobs")
    images = top.section("images")
    container = top.section("container")
    logging_ = top.section("logging")
    metrics = top.section("metrics")
    d = Config()
    fields: dict[str, Any] = dict(
        socket_path=_absolute(sock, "path", str(d.socket_path)),
        socket_mode=_mode(sock, "mode", d.socket_mode),
        socket_group=sock.get("group", str, None),
        admin_group=sock.get("admin_group", str, None),
        request_timeout_s=float(sock.get("request_timeout_s", (int, float), 10.0)),
        max_connections_per_user=sock.get("max_connections_per_user", int,
                                          d.max_connections_per_user),
        max_connections=sock.get("max_connections", int, d.max_connections),
        batch_system=system,
        pbs_home=_home(system, torque, openpbs, d.pbs_home),
        require_pbs_mom_parent=_moved(batch_, torque, "require_pbs_mom_parent",
                                      lambda sec, key: sec.get(key, bool, True)),
        job_cgroup=torque.get("job_cgroup", bool, True),
        pbs_track=(_absolute(torque, "pbs_track", None) if "pbs_track" in torque.data
                   else d.pbs_track),  # null turns adoption off
        clients=_moved(batch_, torque, "clients", _paths),
        sister_port=(torque.get("sister_port", int, None) if "sister_port" in torque.data
                     else d.sister_port),  # null turns it off
        allow_root=jobs.get("allow_root", bool, False),
        min_uid=jobs.get("min_uid", int, d.min_uid),
        drop_env=jobs.names("drop_env"),
        workdir_roots=_roots(jobs, "workdir_roots"),
        pull=images.choice("pull", PULL_POLICIES, d.pull),
        network=container.choice("network", NETWORK_MODES, d.network),
        pids_limit=container.get("pids_limit", int, d.pids_limit),
        engine_retry_s=float(container.get("engine_retry_s", (int, float), d.engine_retry_s)),
        sweep_interval_s=float(container.get("sweep_interval_s", (int, float),
                                             d.sweep_interval_s)),
        memory_from_rlimit=container.get("memory_from_rlimit", bool, True),
        read_only_root=container.get("read_only_root", bool, d.read_only_root),
        tmp_bytes=_size(container, "tmp_size", d.tmp_bytes),
        keeper=_absolute(container, "keeper", str(d.keeper)),
        log_format=logging_.choice("format", LOG_FORMATS, d.log_format),
        log_level=logging_.choice("level", ("debug", "info", "warning", "error"), d.log_level),
        metrics_textfile=_absolute(metrics, "textfile", None),
        metrics_interval_s=float(metrics.get("interval_s", (int, float), d.metrics_interval_s)),
        source=source,
    )
    if fields["max_connections_per_user"] < 1:
        raise sock.fail("max_connections_per_user", "must be at least 1")
    if not fields["max_connections_per_user"] <= fields["max_connections"] <= 1_000_000:
        raise sock.fail("max_connections", "must be between max_connections_per_user and "
                                           "1000000")
    if not 0.1 <= fields["request_timeout_s"] <= 300:
        raise sock.fail("request_timeout_s", "must be between 0.1 and 300 seconds")
    if fields["sweep_interval_s"] < 1:
        raise container.fail("sweep_interval_s", "must be at least 1 second")
    if fields["metrics_textfile"] is not None and not str(
            fields["metrics_textfile"]).endswith(".prom"):
        raise metrics.fail("textfile", "must end in .prom (node_exporter reads only those)")
    if not 1 <= fields["metrics_interval_s"] <= 3600:
        raise metrics.fail("interval_s", "must be between 1 and 3600 seconds")
    if fields["sister_port"] is not None and not 1 <= fields["sister_port"] < 1024:
        raise torque.fail("sister_port", "must be a privileged port (1-1023): only root may "
                                         "answer there")
    if fields["pids_limit"] < 16:
        raise container.fail("pids_limit", "must be at least 16")

    aliases = images.section("aliases")
    parsed_images = []
    for alias in aliases.data:
        entry = aliases.section(alias)
        if not isinstance(alias, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", alias):
            raise aliases.fail(alias, "image aliases are letters, digits, '.', '_' and '-'")
        ref = entry.get("ref", str, None)
        if ref is None:
            raise entry.fail("ref", "is required (a pinned name@sha256:... or image id)")
        if not _PINNED.match(ref):
            raise entry.fail("ref", f"must be pinned by digest (name@sha256:<64 hex>) or be "
                                    f"an image id (sha256:<64 hex>), not {ref!r}")
        parsed_images.append(Image(alias, ref, _audience(entry)))
        entry.finish()
    aliases.finish()
    fields["images"] = tuple(parsed_images)
    default = images.get("default", str, None)
    if parsed_images and default is None:
        raise images.fail("default", "is required when images are defined")
    if default is not None and default not in {i.alias for i in parsed_images}:
        raise images.fail("default", f"names no alias under images.aliases: {default!r}")
    fields["default_image"] = default or ""

    mounts = top.get("mounts", list, [])
    parsed_mounts = []
    for index, raw in enumerate(mounts):
        entry = _Section(raw, f"mounts[{index}]", top.lines.get("mounts"))
        path = _absolute(entry, "path", None)
        if path is None:
            raise entry.fail("path", "is required")
        target = _absolute(entry, "target", str(path))
        if str(target) == "/" or target.parts[1:2] in (("proc",), ("sys",), ("dev",)):
            raise entry.fail("target", f"may not be {target}")
        parsed_mounts.append(SiteMount(path, target, entry.get("read_only", bool, True),
                                       entry.get("optional", bool, False), _audience(entry)))
        entry.finish()
    fields["mounts"] = tuple(parsed_mounts)

    pbs_attach = (_absolute(openpbs, "pbs_attach", None) if "pbs_attach" in openpbs.data
                  else PBS_ATTACH)  # null turns adoption off
    if system == "openpbs":  # Torque's pbs_track, cgroup path and sister port do not apply
        for key in ("pbs_track", "sister_port", "job_cgroup"):
            if key in torque.data:
                raise torque.fail(key, "applies to Torque only (batch.system is openpbs)")
        fields.update(pbs_track=pbs_attach, sister_port=None, job_cgroup=False)
    for sec in (batch_, openpbs, sock, torque, jobs, images, container, logging_, metrics, top):
        sec.finish()
    return Config(**fields)


def load(path: Path = DEFAULT_PATH) -> Config:
    """Read and validate the config file.

    Raises:
        ConfigError: unreadable file, YAML syntax error or invalid content.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(str(path), f"not valid YAML: {_plain(exc)}", line) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"YAML error: {exc}") from exc
    return parse(data, source=Path(path))


def _plain(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's parser message in an admin's words (its line is given by the caller)."""
    problem = str(exc.problem or "")
    column = f" (column {exc.problem_mark.column + 1})" if exc.problem_mark else ""
    opened = exc.context_mark.line + 1 if exc.context_mark else None
    context = str(exc.context or "")
    if "\\t" in problem:  # PyYAML names a tab '\t'
        return f"a tab character{column}: indent with spaces only"
    if problem.startswith("mapping values are not allowed"):
        return (f"a 'key: value' where none may be{column}: check the indentation of this "
                "line and the one before, or quote a value that contains ': '")
    if "flow sequence" in context:
        return f"a list opened with '[' on line {opened} is not closed with ']'"
    if "flow mapping" in context:
        return f"a mapping opened with '{{' on line {opened} is not closed with '}}'"
    if "quoted scalar" in context:
        return f"a quoted value opened on line {opened} has no closing quote"
    if "block" in context and problem.startswith("expected"):
        return (f"this line{column} does not fit the indentation of the block that starts "
                f"on line {opened}: check its indentation")
    if problem.startswith("found undefined alias"):
        return f"{problem}{column}: quote a value that starts with '*'"
    return f"{problem}{column}" + (f" ({context} from line {opened})" if context else "")
