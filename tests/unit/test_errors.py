import pytest

from cbatch import errors


@pytest.mark.parametrize("exc,status", [
    (errors.NotABatchJob("not a job\nsecond line"), errors.EXIT_REFUSED),
    (errors.DirectiveError(4, "bad"), errors.EXIT_REFUSED),
    (errors.PolicyDenied("no", allowed=["a"]), errors.EXIT_REFUSED),
    (errors.ConfigError("a.b", "bad", 3), errors.EXIT_NODE_FAILURE),
    (errors.EngineUnavailable("down"), errors.EXIT_NODE_FAILURE),
    (errors.ImageUnavailable("gone"), errors.EXIT_NODE_FAILURE),
    (errors.ContainerFailed("failed"), errors.EXIT_NODE_FAILURE),
    (errors.ProtocolError("garbled"), errors.EXIT_NODE_FAILURE),
])
def test_every_error_is_one_line_with_its_status_and_log_fields(exc, status):
    assert "\n" not in str(exc) and str(exc)
    assert exc.exit_status == status
    fields = exc.log_fields()
    assert fields["error"] == type(exc).__name__ and fields["reason"] == str(exc)


def test_requeue_and_refusal_codes_differ_and_fit_a_byte():
    assert errors.EXIT_NODE_FAILURE != errors.EXIT_REFUSED
    assert 0 < errors.EXIT_NODE_FAILURE < 128 and 0 < errors.EXIT_REFUSED < 128


def test_each_class_gets_its_status_from_the_one_table():
    """Whose side failed decides the status: the job owner's (126) or the node's (125)."""
    def leaves(cls):
        return [cls] + [c for sub in cls.__subclasses__() for c in leaves(sub)]

    for cls in leaves(errors.CbatchError):
        if cls is errors.DaemonRefused:
            continue  # carries the status cbatchd chose
        owner = issubclass(cls, errors.RequestError)
        expected = errors.EXIT_REFUSED if owner else errors.EXIT_NODE_FAILURE
        assert cls.exit_status.fget(cls.__new__(cls)) == expected, cls.__name__
    assert errors.DaemonRefused("no", 126).exit_status == 126


@pytest.mark.parametrize("exc,name", [
    (errors.AlreadyRunning("x"), "RequestError"), (errors.ShellUnavailable("x"), "RequestError"),
    (errors.NodeIncomplete("x"), "NodeError"), (errors.MountFailed("x"), "NodeError"),
    (errors.ResumeFailed("x"), "NodeError"), (errors.EngineRestarted("x"), "EngineError"),
])
def test_failures_are_named_for_what_happened_not_for_their_code(exc, name):
    assert type(exc).__mro__[1].__name__ == name


def test_protocol_has_one_protocol_error():
    from cbatch import protocol
    assert issubclass(protocol.FrameError, errors.ProtocolError)
    assert not hasattr(protocol, "ProtocolError") or protocol.ProtocolError is errors.ProtocolError
