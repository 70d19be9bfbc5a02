"""BackgroundRuns: the operations this process runs in its own threads (those the API and the
console start), whose failures are logged and stored, never lost, and which a caller can wait for."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ...errors import ProviderJobsError

__all__ = ["BackgroundRuns"]

logger = logging.getLogger("provider_jobs.dlq.operations")


class BackgroundRuns:
    """The threads of this process running operations, one per operation."""

    def __init__(self) -> None:
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(self, operation_id: int, run: Callable[[], None]) -> None:
        """Call ``run`` (which runs the operation ``operation_id``) in a new daemon thread."""

        def work() -> None:
            try:
                run()
            except ProviderJobsError:
                pass  # logged and stored by the run: the operation shows it failed, and why
            except Exception:  # a thread's failure is logged and stored, never lost
                logger.exception("Operation %d stopped", operation_id)
            finally:
                with self._lock:
                    self._threads.pop(operation_id, None)

        thread = threading.Thread(target=work, name=f"dlq-operation-{operation_id}", daemon=True)
        with self._lock:
            self._threads[operation_id] = thread
        thread.start()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the operations running in this process's threads."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout_s)
