"""Provider: what a provider is, and the in-process kind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from ..errors import UnknownOperation
from ..jobs import STANDARD_OPERATIONS, ProviderJob

__all__ = ["FunctionProvider", "InProcessProvider", "OperationHandler", "Provider"]

#: Runs one operation: takes the job, returns a JSON-able result or ``None``.
OperationHandler = Callable[[ProviderJob], Any]


@runtime_checkable
class Provider(Protocol):
    """Anything that can run a :class:`ProviderJob`.

    ``execute`` raises a :class:`~provider_jobs.errors.ProviderError` subclass
    (or any exception; the classifier reads its type, status and text) on failure.
    ``job.idempotency_key`` is the same on every attempt and redelivery of a job:
    a provider that answers a key it has seen with its first outcome runs each
    job once, even when a worker dies in the middle of a call.
    """

    def execute(self, job: ProviderJob) -> Any: ...


class InProcessProvider:
    """A provider written in Python, in the worker's process.

    Subclasses define a method per operation (``create``, ``get``, ``update``,
    ``delete``, or any provider-defined action listed in ``actions``), each
    taking the :class:`ProviderJob`.
    """

    #: Provider-defined actions beyond the standard four.
    actions: tuple[str, ...] = ()

    def execute(self, job: ProviderJob) -> Any:
        if job.operation not in (*STANDARD_OPERATIONS, *self.actions):
            raise UnknownOperation(f"Unknown operation {job.operation!r} for {job.provider}")
        handler = getattr(self, job.operation.replace("-", "_").replace(".", "_"), None)
        if handler is None:
            raise UnknownOperation(f"Unknown operation {job.operation!r} for {job.provider}")
        return handler(job)


class FunctionProvider:
    """A provider made of plain functions, one per operation.

    Args:
        handlers: Operation name to handler.
    """

    def __init__(self, handlers: Mapping[str, OperationHandler]) -> None:
        self.handlers = dict(handlers)

    def execute(self, job: ProviderJob) -> Any:
        try:
            handler = self.handlers[job.operation]
        except KeyError:
            raise UnknownOperation(f"Unknown operation {job.operation!r} for {job.provider}") from None
        return handler(job)
