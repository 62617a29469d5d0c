"""The daemon the tests run against: a LocalNode (a real cbatchd on a temporary socket)."""

from cbatch.localnode import LocalNode as DaemonUnderTest

__all__ = ["DaemonUnderTest"]
