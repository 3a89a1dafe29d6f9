"""Assertions shared by the integration tests."""

PREFIX = "s3cachefs-s3: "


def ok(rc, out, err):
    """The command succeeded: returns its stdout."""
    assert rc == 0, f"rc {rc}, stderr: {err!r}"
    return out


def one_error_line(rc, err, rc_want=None):
    """The tool's contract for failures: a non-zero exit (rc_want if given)
    and exactly one non-empty stderr line starting with 'PROG: '.  Returns
    that line."""
    if rc_want is None:
        assert rc != 0, f"expected failure, got rc 0; stderr: {err!r}"
    else:
        assert rc == rc_want, f"expected rc {rc_want}, got {rc}; stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err!r}"
    assert lines[0].startswith(PREFIX) and lines[0][len(PREFIX):].strip(), f"bad error line: {lines[0]!r}"
    return lines[0]
