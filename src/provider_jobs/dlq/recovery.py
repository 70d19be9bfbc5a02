"""Recovery replay: when a provider is available again, its dead letters about its health go back.

A provider becomes available when a worker registers it (it appears in the
workers' announcements) or when its circuit breaker closes, both read from the
health stream (see :mod:`provider_jobs.health`). Its dead letters of the
recovery categories are then replayed, oldest first, at
``PROVIDER_JOBS_RECOVERY_REPLAY_RATE`` per second, each written to the audit
log as a ``replay`` by the operator ``recovery``. Only records dead-lettered
before the recovery began are looked at, so a replayed job that fails again is
not replayed again by the same recovery; the archive's claims make each record
go once even when several processes recover at the same time. Should the
provider's breaker open again meanwhile, the rest of its records wait for it
to close, as any replay's do.

The categories are the triage policy's ``recovery_categories``:
``provider_not_found`` by default; a policy file may add the others that are
about a provider's health (:data:`HEALTH_CATEGORIES`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..health.directory import STALE_PERIODS, ProviderDirectory
from ..health.stream import HealthFollower, HealthStream
from ..health.watch import BreakerWatch
from ..settings import Settings
from .archive.filters import RecordFilter
from .archive.store import DEAD, DeadLetterArchive
from .replay.replayer import Replayer, ReplayReport

__all__ = [
    "HEALTH_CATEGORIES",
    "RECOVERY_WHO",
    "RecoveryPlan",
    "RecoveryReplay",
    "recovery_plan",
    "start_recovery",
]

logger = logging.getLogger("provider_jobs.dlq.recovery")

#: Categories of dead letters that were about their provider's health.
HEALTH_CATEGORIES = (
    "provider_not_found",
    "provider_not_available",
    "provider_down",
    "service_unavailable",
    "connection_error",
    "timeout",
)
#: The operator written to the audit log.
RECOVERY_WHO = "recovery"
#: Records looked at per provider and recovery.
_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """What a recovery of one provider replays.

    Args:
        provider: ``namespace/resource_type``.
        record_ids: Archive ids, oldest first.
        before_ms: Only records dead-lettered before this were chosen.
    """

    provider: str
    record_ids: tuple[int, ...]
    before_ms: int


def recovery_plan(
    archive: DeadLetterArchive, provider: str, categories: Iterable[str], *, before_ms: int | None = None
) -> RecoveryPlan:
    """The dead letters of ``provider`` in ``categories`` that a recovery starting now would replay."""
    before = before_ms if before_ms is not None else int(time.time() * 1000)
    namespace, _, resource_type = provider.partition("/")
    found = []
    for category in dict.fromkeys(categories):
        found += archive.find(
            RecordFilter(
                statuses=[DEAD],
                category=category,
                provider_namespace=namespace,
                resource_type=resource_type,
                until_ms=before,
            ),
            limit=_LIMIT,
            oldest_first=True,
        )
    found.sort(key=lambda r: (r.dead_lettered_ms, r.id or 0))
    return RecoveryPlan(provider, tuple(r.id for r in found if r.id is not None), before)


class RecoveryReplay:
    """Follows the health stream and replays each provider's health dead letters when it recovers.

    Args:
        settings: Broker URL, queue name, ``providers_announce_s``, ``recovery_replay_rate``.
        archive: The archive.
        categories: Dead-letter categories replayed. Default ``("provider_not_found",)``.
        replayer: Sends the replays. Default one on ``settings.broker_url`` as ``recovery``.
    """

    def __init__(
        self,
        settings: Settings,
        archive: DeadLetterArchive,
        *,
        categories: Sequence[str] = ("provider_not_found",),
        replayer: Replayer | None = None,
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.categories = tuple(categories)
        self.rate_per_s = settings.recovery_replay_rate
        self.replayer = replayer or Replayer(
            archive=archive, broker_url=settings.broker_url, who=RECOVERY_WHO
        )
        self.directory = ProviderDirectory()
        #: The directory's breakers as a recovery's replay waits on them (a breaker that opens
        #: again holds the rest of that provider's records back).
        self.breakers = BreakerWatch(self.directory)
        self._available: set[str] = set()
        self._todo: queue.Queue[str | None] = queue.Queue()
        #: Each recovery's report, by provider, the last one kept.
        self.reports: dict[str, ReplayReport] = {}
        self._follower = HealthFollower(
            HealthStream(settings.broker_url, settings.queue_name),
            self.observe,
            lookback_s=STALE_PERIODS * settings.providers_announce_s + 5.0,
            tick=self._recheck,
            name="recovery-follower",
        )
        self._thread = threading.Thread(target=self._work, name="recovery-replay", daemon=True)

    def start(self) -> None:
        """Follow the stream and replay in threads of their own."""
        self._thread.start()
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()
        self._todo.put(None)
        self._thread.join(10)

    def observe(self, event: Mapping[str, Any]) -> None:
        """Fold one health event in; a provider that became available is queued for recovery."""
        self.breakers.fold(event)
        closed = event.get("type") == "breaker" and event.get("event") == "closed"
        key = (event.get("state") or {}).get("key") if closed else None
        self._recheck(closed=key)

    def _recheck(self, closed: str | None = None) -> None:
        available = {entry.key for entry in self.directory.entries() if entry.healthy}
        for key in sorted(available - self._available):
            self._todo.put(key)
        if closed is not None and closed in available and closed in self._available:
            self._todo.put(closed)
        self._available = available

    def _work(self) -> None:
        while True:
            key = self._todo.get()
            if key is None:
                return
            try:
                self.recover(key)
            except Exception:
                logger.exception("Recovery of %s failed; its dead letters wait for the next one", key)

    def recover(self, provider: str) -> ReplayReport | None:
        """Replay ``provider``'s dead letters of the recovery categories, paced; ``None`` when none."""
        if self.rate_per_s <= 0:
            return None
        plan = recovery_plan(self.archive, provider, self.categories)
        if not plan.record_ids:
            return None
        logger.info(
            "Provider %s is available again: replaying %d dead letter(s) (%s) at %s/s",
            provider,
            len(plan.record_ids),
            ", ".join(self.categories),
            f"{self.rate_per_s:g}",
        )
        report = self.replayer.replay(
            list(plan.record_ids),
            rate_per_s=self.rate_per_s,
            reason=f"recovery: provider {provider} is available again",
            health=self.breakers,
        )
        self.reports[provider] = report
        logger.info(
            "Recovery of %s: %d replayed, %d not sent",
            provider,
            report.published,
            len(plan.record_ids) - report.published,
        )
        return report


def start_recovery(settings: Settings, archive: DeadLetterArchive) -> RecoveryReplay | None:
    """Start replaying on recovery with the triage policy's categories (``dlq_policy_file``);
    ``None`` when ``recovery_replay_rate`` is 0.

    Raises:
        PolicyError: The policy file is not valid.
    """
    from .triage import DEFAULT_POLICY, DlqPolicy

    if settings.recovery_replay_rate <= 0:
        return None
    policy = DlqPolicy.load(settings.dlq_policy_file) if settings.dlq_policy_file else DEFAULT_POLICY
    recovery = RecoveryReplay(settings, archive, categories=policy.recovery_categories)
    recovery.start()
    logger.info(
        "Replaying %s dead letters when their provider is available again, at %s/s",
        ", ".join(policy.recovery_categories),
        f"{settings.recovery_replay_rate:g}",
    )
    return recovery
