"""Dead letters' tracebacks: the standard format, chains included, without 3.11's markers."""

from __future__ import annotations

import traceback

from provider_jobs.middleware.dead_letters import format_traceback


def _fail(depth: int) -> int:
    if depth == 0:
        raise ValueError("backend busy")
    return 1 + _fail(depth - 1)  # a call inside a line: 3.11 marks it


def _chained() -> BaseException:
    try:
        try:
            _fail(3)
        except ValueError as exc:
            raise RuntimeError("provider call failed") from exc
    except RuntimeError as exc:
        return exc
    raise AssertionError("unreachable")


def test_the_traceback_reads_as_the_standard_one_without_markers() -> None:
    exception = _chained()
    standard = "".join(traceback.format_exception(exception, limit=30))
    ours = format_traceback(exception)
    assert "^" not in ours
    markers = {line for line in standard.splitlines() if line.strip() and not set(line.strip()) - {"^", "~"}}
    assert markers  # the standard format has them here
    assert ours.splitlines() == [line for line in standard.splitlines() if line not in markers]


def test_the_cause_and_the_innermost_frame_are_there() -> None:
    ours = format_traceback(_chained())
    assert "ValueError: backend busy" in ours
    assert "The above exception was the direct cause of the following exception:" in ours
    assert 'raise ValueError("backend busy")' in ours
    assert ours.rstrip().endswith("RuntimeError: provider call failed")
