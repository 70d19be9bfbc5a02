"""Who is acting: the worker's id and the operator's name, each worked out here alone.

An entry point works each out once, at start, and hands it to whoever writes
it down (``build_broker`` gives the worker id to its middleware and its
consumers; the operator CLI and the API give the operator name to the
archive's audit log). The defaults here are for components made without one.
"""

from __future__ import annotations

import getpass
import os
import socket

__all__ = ["operator_name", "worker_id"]


def worker_id(configured: str | None = None) -> str:
    """The worker's id in logs, metrics, attempt records, dead letters and the health stream.

    Args:
        configured: The configured id (``PROVIDER_JOBS_WORKER_ID``). Default ``None``:
            ``<host>-<pid>``, distinct for each process of a host.
    """
    return configured or f"{socket.gethostname()}-{os.getpid()}"


def operator_name(configured: str | None = None, *, default: str | None = None) -> str:
    """The operator's name in the archive's audit log and on the operations it starts.

    Args:
        configured: The configured name (``PROVIDER_JOBS_OPERATOR``).
        default: The name without one, such as ``"api"`` for the HTTP API. Default ``None``:
            ``<user>@<host>``, the person at a terminal.
    """
    if configured:
        return configured
    return default if default is not None else f"{getpass.getuser()}@{socket.gethostname()}"
