"""The parking fault test's provider, down while the file ``down`` exists in
``FAULT_OUTCOMES_DIR``; a job that succeeds appends its id to ``succeeded-<pid>`` there.
``python parking_worker.py`` runs one worker process on it (``PROVIDER_JOBS_*`` settings).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provider_jobs.errors import ProviderNotAvailable
from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import ProviderRegistry

from fault_workload import main

NAMESPACE = "Test.Parking"
RESOURCE_TYPE = "Outage"


class Outage:
    """The provider: down while ``<FAULT_OUTCOMES_DIR>/down`` exists."""

    def execute(self, job: ProviderJob) -> Any:
        directory = Path(os.environ["FAULT_OUTCOMES_DIR"])
        if (directory / "down").exists():
            raise ProviderNotAvailable("Provider not available")
        with open(directory / f"succeeded-{os.getpid()}", "a") as out:
            out.write(job.job_id + "\n")
        return {"ok": True}


def registry() -> ProviderRegistry:
    """The workload's providers: the one :class:`Outage`."""
    providers = ProviderRegistry()
    providers.register(NAMESPACE, RESOURCE_TYPE, Outage())
    return providers


if __name__ == "__main__":
    main(registry())
