"""cbatchd's trqauthd relay: started when the policy names Torque clients, even by a reload."""

import yaml

from cbatch import clients, config, daemon


def test_a_reload_that_names_clients_starts_the_relay_and_containers_mount_it(tmp_path):
    policy = {"images": {"default": "el9", "aliases": {"el9": {"ref": "sha256:" + "a" * 64}}},
              "socket": {"path": str(tmp_path / "run" / "cbatchd.sock")}}
    path = tmp_path / "cbatch.yaml"
    path.write_text(yaml.safe_dump(policy))
    d = daemon.Daemon(config.load(path), path)
    assert d._relay_trqauthd() is None  # no clients, no relay
    policy["batch"] = {"clients": ["/usr/bin/true"]}
    path.write_text(yaml.safe_dump(policy))
    d.reload()
    try:
        assert d.relay is not None and d.relay.path.is_socket()
        mounts = {str(b.target): b.source for b in clients.binds(d.cfg)}
        assert mounts["/.cbatch-trqauthd"] == tmp_path / "run" / "trqauthd"
    finally:
        d.relay.close()
