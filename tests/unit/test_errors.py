import pytest

from cbatch import errors


@pytest.mark.parametrize("exc,status", [
    (errors.NotATorqueJob("not a job\nsecond line"), errors.EXIT_REFUSED),
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
