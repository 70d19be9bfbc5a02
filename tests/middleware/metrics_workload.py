"""A known workload for the metrics tests: jobs that succeed, recover, fail for good, never recover.

Imported by the in-process tests and, as ``metrics_worker_app``'s helper, by
``dramatiq`` CLI worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dramatiq.middleware import CurrentMessage

from provider_jobs.errors import ProviderTimeout, ValidationFailed
from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import FunctionProvider, ProviderRegistry

NAMESPACE = "Test.Metrics"
RESOURCE_TYPE = "Workload"
PROVIDER = f"{NAMESPACE}/{RESOURCE_TYPE}"


def _handle(job: ProviderJob) -> Any:
    behaviour = job.request["behaviour"]
    if behaviour == "permanent":
        raise ValidationFailed("Validation error: the workload says no")
    if behaviour == "down":
        raise ProviderTimeout("Connection timeout")
    if behaviour == "flaky":
        message = CurrentMessage.get_current_message()
        assert message is not None
        if message.options.get("retries", 0) < 1:
            raise ProviderTimeout("Connection timeout")
    return {"ok": True}


def workload_registry() -> ProviderRegistry:
    """A registry whose one provider behaves as each job's ``request["behaviour"]`` says."""
    registry = ProviderRegistry()
    registry.register(NAMESPACE, RESOURCE_TYPE, FunctionProvider({"create": _handle}))
    return registry


@dataclass(frozen=True)
class Workload:
    """How many jobs of each kind to send; with 3 attempts a ``down`` job retries twice."""

    succeed: int
    flaky: int
    permanent: int
    down: int

    def jobs(self) -> list[dict[str, Any]]:
        kinds = {"ok": self.succeed, "flaky": self.flaky, "permanent": self.permanent, "down": self.down}
        return [
            {
                "provider_namespace": NAMESPACE,
                "resource_type": RESOURCE_TYPE,
                "operation": "create",
                "request": {"behaviour": behaviour, "n": n},
            }
            for behaviour, count in kinds.items()
            for n in range(count)
        ]

    def expected(self, max_attempts: int = 3) -> Mapping[str, int]:
        """The counts a correct ``Metrics`` reports after this workload."""
        down_retries = self.down * (max_attempts - 1)
        return {
            "processed": self.succeed + self.flaky,
            "retries": self.flaky + down_retries,
            "failed": self.permanent + self.down,
            "attempts": self.succeed + 2 * self.flaky + self.permanent + self.down * max_attempts,
        }
