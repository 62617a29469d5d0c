from pathlib import Path

import pytest

from cbatch import config
from cbatch.errors import ConfigError

SAMPLE = Path(__file__).parents[2] / "etc" / "cbatch.yaml"
DIGEST = "sha256:" + "a" * 64


def load_text(tmp_path, text):
    path = tmp_path / "cbatch.yaml"
    path.write_text(text)
    return config.load(path)


def test_sample_config_is_valid_and_complete():
    cfg = config.load(SAMPLE)
    assert cfg.default_image == "el9"
    assert cfg.image("slc6").audience.groups == ("atlas", "cms")
    assert cfg.require_pbs_mom_parent is True
    assert cfg.socket_mode == 0o666 and cfg.network == "host"


def test_minimal_config_takes_defaults(tmp_path):
    cfg = load_text(tmp_path, f"images:\n  default: a\n  aliases:\n    a: {{ref: '{DIGEST}'}}\n")
    assert cfg.image("a").ref == DIGEST
    assert cfg.pbs_home == Path("/var/spool/torque") and cfg.pull == "never"


@pytest.mark.parametrize("text,where,problem", [
    ("sockets: {}\n", "sockets (line 1)", "unknown key"),
    ("socket:\n  path: /x\n  colour: red\n", "socket.colour (line 3)", "unknown key"),
    ("socket:\n  path: relative\n", "socket.path (line 2)", "must be an absolute path"),
    ("jobs:\n  min_uid: lots\n", "jobs.min_uid (line 2)", "must be int"),
    ("jobs:\n  allow_root: 1\n", "jobs.allow_root (line 2)", "must be bool"),
    ("container:\n  network: overlay\n", "container.network (line 2)", "must be one of host, bridge, none"),
    ("images:\n  default: a\n  aliases:\n    a: {ref: 'centos:7'}\n", "images.aliases.a.ref (line 4)",
     "must be pinned by digest"),
    (f"images:\n  default: b\n  aliases:\n    a: {{ref: '{DIGEST}'}}\n", "images.default (line 2)",
     "names no alias"),
    ("mounts:\n  - path: /data\n    writable: true\n", "mounts[0].writable", "unknown key"),
    ("mounts:\n  - path: /x\n    target: /proc/x\n", "mounts[0].target", "may not be /proc/x"),
    ("socket: [1, 2]\n", "socket (line 1)", "must be a mapping"),
    ("socket:\n  path: /a\n  path: /b\n", "path (line 3)", "duplicate key"),
    ("socket: {path: /a\n", "cbatch.yaml",
     "not valid YAML: a mapping opened with '{' on line 1 is not closed"),
    ("container:\n  tmp_size: 1 gig\n", "container.tmp_size (line 2)", "must be a size like 1g"),
    ("container:\n  tmp_size: 512k\n", "container.tmp_size (line 2)", "must be at least 1m"),
    ("container:\n  tmp_size: yes\n", "container.tmp_size (line 2)", "must be a size like 1g"),
    ("container:\n  read_only_root: no way\n", "container.read_only_root (line 2)", "must be bool"),
    ("socket:\n  max_connections: 100\n  max_connections_per_user: 200\n",
     "socket.max_connections (line 2)", "must be between max_connections_per_user and"),
])
def test_errors_name_key_path_and_line(tmp_path, text, where, problem):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    message = str(info.value)
    assert where in message and problem in message, message
    assert "\n" not in message


@pytest.mark.parametrize("value,size", [
    ("", 2**30), ("tmp_size: 2g", 2 * 2**30), ("tmp_size: 512M", 512 * 2**20),
    ("tmp_size: 1048576", 2**20), ("tmp_size: null", None)])
def test_each_jobs_tmp_is_bounded_by_default_and_sized_by_the_admin(tmp_path, value, size):
    cfg = load_text(tmp_path, f"container:\n  {value}\n" if value else "")
    assert cfg.tmp_bytes == size and cfg.read_only_root is True


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.yaml")


def test_sister_port_is_privileged_and_null_turns_it_off():
    assert config.parse({}).sister_port == 1019
    assert config.parse({"torque": {"sister_port": None}}).sister_port is None
    with pytest.raises(ConfigError, match="privileged"):
        config.parse({"torque": {"sister_port": 15019}})


@pytest.mark.parametrize("data,system,home", [
    ({}, "torque", Path("/var/spool/torque")),
    ({"batch": {"system": "openpbs"}}, "openpbs", Path("/var/spool/pbs")),
    ({"batch": {"system": "openpbs"}, "openpbs": {"home": "/srv/pbs"}}, "openpbs",
     Path("/srv/pbs")),
    ({"openpbs": {"home": "/srv/pbs"}}, "torque", Path("/var/spool/torque")),
])
def test_batch_system_chooses_the_prover_and_its_home(data, system, home):
    cfg = config.parse(data)
    assert (cfg.batch_system, cfg.pbs_home) == (system, home)


def test_an_openpbs_node_adopts_with_pbs_attach_and_has_no_sister_port():
    cfg = config.parse({"batch": {"system": "openpbs"}})
    assert (cfg.pbs_track, cfg.sister_port, cfg.job_cgroup) == (
        Path("/opt/pbs/bin/pbs_attach"), None, False)
    assert config.parse({"batch": {"system": "openpbs"},
                         "openpbs": {"pbs_attach": None}}).pbs_track is None
    assert config.parse({"batch": {"system": "openpbs"}, "openpbs": {
        "pbs_attach": "/srv/pbs/bin/pbs_attach"}}).pbs_track == Path("/srv/pbs/bin/pbs_attach")
    assert config.parse({}).pbs_track == Path("/usr/local/bin/pbs_track")
    with pytest.raises(ConfigError, match="torque.sister_port.*Torque only"):
        config.parse({"batch": {"system": "openpbs"}, "torque": {"sister_port": 1019}})


@pytest.mark.parametrize("section", ["batch", "torque"])  # torque: their former place
def test_keys_for_every_batch_system_live_under_batch_and_their_old_place_still_works(
        section):
    cfg = config.parse({section: {"require_pbs_mom_parent": False,
                                  "clients": ["/opt/pbs/bin/pbsdsh"]}})
    assert (cfg.require_pbs_mom_parent, cfg.clients) == (False, (Path("/opt/pbs/bin/pbsdsh"),))
    assert cfg.torque_home == cfg.pbs_home  # the field's former name still reads


def test_a_moved_key_in_both_places_is_refused():
    with pytest.raises(ConfigError, match="torque.clients.*batch.clients now"):
        config.parse({"batch": {"clients": []}, "torque": {"clients": []}})


@pytest.mark.parametrize("name", ["slurm", "torque_records", "proc_facts", "__init__", "../x"])
def test_an_unknown_batch_system_is_refused(name):
    with pytest.raises(ConfigError, match="batch.system.*must be a batch system"):
        config.parse({"batch": {"system": name}})
