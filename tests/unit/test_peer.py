"""Who is on the other end of the socket: from the kernel, read once."""

import os
import socket

from cbatch import peer


def test_credentials_of_a_connected_peer_are_the_kernels(tmp_path):
    a, b = socket.socketpair()
    with a, b:
        who = peer.credentials(a)
    assert (who.pid, who.uid, who.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert set(who.groups) == set(os.getgroups())
    assert who.stat is not None and who.stat.start_ticks == who.start_ticks
    mask = os.umask(0)
    os.umask(mask)
    assert who.umask == mask


def write_proc(root, pid, stat_rest, status):
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{pid} (a (tricky) name) {stat_rest}\n")
    (d / "status").write_text(status)


def test_describe_reads_stat_and_status_once_each(tmp_path):
    rest = "S 1 9 9 34816 " + "0 " * 14 + "4321"
    write_proc(tmp_path, 9, rest, "Name:\tx\nUmask:\t0027\nGroups:\t10 20 \nUid:\t5\t5\t5\t5\n")
    who = peer.describe(9, 5, 5, tmp_path)
    assert who.groups == (10, 20) and who.umask == 0o027 and who.start_ticks == 4321
    assert (who.stat.comm, who.stat.state, who.stat.ppid, who.stat.session,
            who.stat.tty_nr) == ("a (tricky) name", "S", 1, 9, 34816)
    assert peer.status_field(9, "Uid", tmp_path).split()[0] == "5"


def test_is_alive_tells_a_reused_pid_and_a_zombie_apart(tmp_path):
    write_proc(tmp_path, 3, "S 1 3 3 0 " + "0 " * 14 + "100", "")
    write_proc(tmp_path, 4, "Z 1 4 4 0 " + "0 " * 14 + "100", "")
    assert peer.is_alive(3, 100, tmp_path)
    assert not peer.is_alive(3, 101, tmp_path)  # same pid, another process
    assert not peer.is_alive(4, 100, tmp_path)  # a zombie
    assert not peer.is_alive(5, 100, tmp_path)  # gone
