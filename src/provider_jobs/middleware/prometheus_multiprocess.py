"""prometheus-client's multiprocess mode: which directory, the merged registry, scrapes, dead processes.

Several worker processes (the ``dramatiq`` CLI) share counts through files in
``PROMETHEUS_MULTIPROC_DIR``. These helpers find that directory, merge every
process's files into one registry to expose, encode it for a scrape and drop
the live gauges of processes that were killed. :mod:`.metrics` re-exports them.
"""

from __future__ import annotations

import os
import re

from prometheus_client import CollectorRegistry, multiprocess, values
from prometheus_client.exposition import choose_encoder

__all__ = ["metrics_registry", "multiprocess_dir", "reap_dead_processes", "render_metrics"]

#: Files of live gauges in the multiprocess directory, by writing process id.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """The multiprocess directory prometheus-client writes to, or ``None`` in single-process mode.

    prometheus-client chooses its mode when it is first imported, from
    ``PROMETHEUS_MULTIPROC_DIR``: setting the variable later has no effect.
    """
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def metrics_registry(
    registry: CollectorRegistry | None = None, *, path: str | None = None
) -> CollectorRegistry:
    """The registry to expose: every process's metrics in multiprocess mode, else ``registry``.

    Args:
        registry: The single-process registry (a :class:`.Metrics`' ``registry``).
            Ignored in multiprocess mode, where the values live in files.
            Defaults to a new, empty registry.
        path: Read this multiprocess directory, whatever this process's mode.
            Defaults to :func:`multiprocess_dir`.

    Raises:
        ValueError: ``path`` is not a directory.
    """
    path = path or multiprocess_dir()
    if path is None:
        return registry if registry is not None else CollectorRegistry()
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
    return merged


def render_metrics(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """Encode ``registry`` for a scrape; returns the body and its content type.

    Args:
        registry: What to expose, for example ``metrics_registry(...)``.
        accept: The scraper's ``Accept`` header; OpenMetrics when it asks for
            it, the Prometheus text format otherwise.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


def reap_dead_processes(path: str) -> None:
    """Drop the live gauges of processes that no longer run (killed, not stopped)."""
    for name in os.listdir(path):
        match = _LIVE_GAUGE_FILE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            continue
