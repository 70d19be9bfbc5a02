"""``provider-jobs archiver``: drain the dead-letter queues into the archive."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from ...errors import ArchiveUnavailable
from .common import _err, _session

__all__ = ["archiver"]


def _serve_metrics(port: int) -> None:
    """Serve the archiver's metrics (archived, duplicates, archive up, over cap...) on ``port``."""
    from prometheus_client import REGISTRY, start_http_server

    from ...middleware.metrics import metrics_registry

    start_http_server(port, registry=metrics_registry(REGISTRY))
    _err.print(f"serving metrics on :{port}/metrics", highlight=False)


def archiver(
    until_idle: Annotated[bool, typer.Option(help="Stop once every dead-letter queue is empty.")] = False,
) -> None:
    """Drain <queue>.XQ (and PROVIDER_JOBS_ARCHIVER_QUEUES) into the archive until stopped.

    With PROVIDER_JOBS_METRICS_PORT set, serves its metrics on that port. Unless
    --until-idle, also replays a provider's health dead letters when it is available
    again (PROVIDER_JOBS_RECOVERY_REPLAY_RATE; 0 turns it off).
    """
    import signal

    from ..archiver.consumer import DeadLetterArchiver
    from ..recovery import start_recovery

    with _session(service_name="provider-jobs-archiver") as (settings, archive):
        # An embedded SQLite archive is upgraded here; an older PostgreSQL one, or one newer
        # than this version, is refused before anything is consumed. An archive that cannot
        # be reached is waited for while draining, as any outage of it is.
        with contextlib.suppress(ArchiveUnavailable):
            archive.check()
        worker = DeadLetterArchiver.from_settings(settings, archive=archive)
        if settings.metrics_port is not None:
            _serve_metrics(settings.metrics_port)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: worker.stop())
        # A provider available again gets its health dead letters back (PROVIDER_JOBS_RECOVERY_REPLAY_RATE).
        recovery = None if until_idle else start_recovery(settings, archive)
        try:
            stats = worker.run(until_idle=until_idle)
        finally:
            if recovery is not None:
                recovery.stop()
    _err.print(f"archived {stats.archived}, duplicates skipped {stats.duplicates}", highlight=False)
