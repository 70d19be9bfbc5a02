"""Who runs an operation and whether it still does: the runner's name (``host:pid``), the
heartbeat a runner keeps while it runs, and how an operation whose runner is gone is told
from one still running."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from ...errors import ArchiveError
from ..archive.operations import RUNNING, OperationRow
from ..archive.store import DeadLetterArchive

__all__ = ["STALE_AFTER_S", "heartbeat", "interrupted", "this_runner"]

logger = logging.getLogger("provider_jobs.dlq.operations")

#: A running operation whose runner has not said it is alive for this long is interrupted.
STALE_AFTER_S = 60.0
#: How often a runner says it is alive.
_BEAT_S = STALE_AFTER_S / 6


def this_runner() -> str:
    """This process, as an operation's ``runner``: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(runner: str | None) -> bool | None:
    """Whether ``runner`` (``host:pid``) is alive; ``None`` when it is on another host."""
    host, _, pid = (runner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def interrupted(operation: OperationRow, *, now_s: float | None = None) -> bool:
    """Whether a ``running`` operation's runner is gone: its process is dead (same host) or it
    has not said it is alive for :data:`STALE_AFTER_S`."""
    if operation.state != RUNNING:
        return False
    alive = _alive(operation.runner)
    if alive is not None:
        return not alive
    now_ms = (time.time() if now_s is None else now_s) * 1000
    return now_ms - (operation.heartbeat_ms or 0) > STALE_AFTER_S * 1000


@contextlib.contextmanager
def heartbeat(archive: DeadLetterArchive, operation_id: int) -> Iterator[None]:
    """Say the operation's runner is alive every :data:`_BEAT_S` while the block runs, also
    through a chunk that waits long (a paced one, or records held back by a breaker)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(_BEAT_S):
            try:
                archive.operation_heartbeat(operation_id)
            except ArchiveError as exc:
                logger.warning("Operation %d: could not say it is alive (%s)", operation_id, exc)

    beater = threading.Thread(target=beat, name=f"dlq-operation-{operation_id}-heartbeat", daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()
