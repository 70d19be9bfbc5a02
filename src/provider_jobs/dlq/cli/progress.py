"""What a replay, a triage or an operation run here says on the terminal as it goes: the progress
bar, a provider's records waiting for its breaker and going again, and how to go on with an
operation that stopped before its end."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ...health.watch import Pause
from ...redaction import Redactor
from ..archive.operations import DONE, OperationRow
from ..replay.replayer import FAILED, ReplayOutcome
from .common import _err, _resume_hint

__all__: list[str] = []


@contextlib.contextmanager
def _progress_bar(
    label: str, *, total: int, completed: int = 0, enabled: bool, show_failures: bool = False
) -> Iterator[Callable[[ReplayOutcome], None] | None]:
    """A progress bar on stderr, gone when the block ends; yields what advances it by one outcome.

    Args:
        label: Shown left of the bar.
        total: Outcomes expected.
        completed: Outcomes settled before (an operation resumed). Default 0.
        enabled: Without it, no bar: yields ``None``.
        show_failures: Print each failed outcome's record and (redacted) detail above the bar.
    """
    if not enabled:
        yield None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=_err, transient=True) as progress:
        task = progress.add_task(label, total=total, completed=completed)

        def advance(outcome: ReplayOutcome) -> None:
            progress.advance(task)
            if show_failures and outcome.status == FAILED:
                detail = Redactor().text(outcome.detail or "")
                progress.console.print(f"record {outcome.record_id}: {detail}", markup=False)

        yield advance


def _show_pause(provider: str, pause: Pause | None) -> None:
    """Say, as it happens, that a provider's records wait for its breaker, and that they go again."""
    if pause is None:
        line = f"resumed: {provider}"
    else:
        line = f"paused: {pause.describe()} (its records wait for it; --ignore-breaker sends them anyway)"
    _err.print(line, markup=False, highlight=False, soft_wrap=True)


def _say_if_stopped(operation: OperationRow) -> None:
    """An operation that did not finish (paused, cancelled, failed) says how to go on."""
    if operation.state != DONE:
        _err.print(
            f"operation {operation.id} is {operation.state}: {_resume_hint(operation.id)}", highlight=False
        )
