"""The demo: in-process providers that succeed, recover, fail for good, and never recover."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from .errors import ServiceUnavailable, ValidationFailed
from .jobs import ProviderJob
from .providers import InProcessProvider, ProviderRegistry

__all__ = ["DEMO_JOBS", "FlakyProvider", "ResourceGroupProvider", "UnavailableProvider", "demo_registry"]


class ResourceGroupProvider(InProcessProvider):
    """``ITL.Core/ResourceGroup``: keeps resource groups in memory; ``name`` is required."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def _name(self, job: ProviderJob) -> str:
        name = job.request.get("name")
        if not isinstance(name, str) or not name:
            raise ValidationFailed("Validation error: missing required field 'name'")
        return name

    def create(self, job: ProviderJob) -> dict[str, Any]:
        group = {"name": self._name(job), "location": job.request.get("location", "local")}
        with self._lock:
            self.groups[group["name"]] = group
        return group

    def get(self, job: ProviderJob) -> dict[str, Any] | None:
        with self._lock:
            return self.groups.get(self._name(job))

    def update(self, job: ProviderJob) -> dict[str, Any]:
        return self.create(job)

    def delete(self, job: ProviderJob) -> None:
        with self._lock:
            self.groups.pop(self._name(job), None)


class FlakyProvider(InProcessProvider):
    """Times out on the first ``failures`` attempts of each job, then succeeds."""

    def __init__(self, failures: int = 2) -> None:
        self.failures = failures
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def execute(self, job: ProviderJob) -> Any:
        with self._lock:
            self.attempts[job.job_id] += 1
            attempt = self.attempts[job.job_id]
        if attempt <= self.failures:
            raise TimeoutError("Connection timeout")
        return {"ok": True, "attempts": attempt}


class UnavailableProvider(InProcessProvider):
    """Always answers that its backend is unavailable."""

    def execute(self, job: ProviderJob) -> Any:
        raise ServiceUnavailable("Service unavailable: the backend is in maintenance")


def demo_registry() -> ProviderRegistry:
    """A registry with the three demo providers."""
    registry = ProviderRegistry()
    registry.register("ITL.Core", "ResourceGroup", ResourceGroupProvider())
    registry.register("ITL.Demo", "Flaky", FlakyProvider())
    registry.register("ITL.Demo", "Maintenance", UnavailableProvider())
    return registry


#: The jobs the demo submits: one per flow (success, success after retries, permanent, exhausted).
DEMO_JOBS: tuple[dict[str, Any], ...] = (
    {
        "provider_namespace": "ITL.Core",
        "resource_type": "ResourceGroup",
        "operation": "create",
        "request": {"name": "demo-rg", "location": "westeurope"},
    },
    {
        "provider_namespace": "ITL.Demo",
        "resource_type": "Flaky",
        "operation": "create",
        "request": {"name": "flaky-thing"},
    },
    {
        "provider_namespace": "ITL.Core",
        "resource_type": "ResourceGroup",
        "operation": "create",
        "request": {"location": "westeurope"},
    },
    {
        "provider_namespace": "ITL.Demo",
        "resource_type": "Maintenance",
        "operation": "get",
        "request": {"name": "anything"},
    },
)
