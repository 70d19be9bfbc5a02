"""Triage (``process_dlq``): what to do with each dead letter, by policy.

A policy is an ordered list of rules; the first rule that matches a dead
record decides. A rule matches on ``category``, ``provider`` (``Namespace`` or
``Namespace/ResourceType``), ``operation``, ``reason``, ``fingerprint`` and
``error_contains``, and does one of:

- ``replay``: send it again; with ``when = "provider_registered"`` only once
  its provider is registered again, or once it has been dead for ``wait_s``;
- ``discard``: mark it discarded, logged at ``log_level``;
- ``escalate``: log at ERROR and POST it to ``webhook_url`` if set; each record
  is escalated once;
- ``keep``: leave it alone.

A policy file is TOML or JSON with a ``rules`` list, for example::

    [[rules]]
    name = "provider-back"
    category = "provider_not_found"
    action = "replay"
    when = "provider_registered"
    wait_s = 3600

A top-level ``recovery_categories`` list names the categories replayed when
their provider is available again (default ``["provider_not_found"]``; see
:mod:`.recovery`).

:data:`DEFAULT_POLICY` is the daily dead-letter process: provider-not-found dead
letters are replayed once the provider is back (or after an hour), validation
failures are discarded with a warning, everything else is escalated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import tomllib
from collections.abc import Container, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from ..errors import PolicyError
from ..redaction import Redactor
from .archive.filters import RecordFilter
from .archive.records import DeadLetter
from .archive.store import DEAD, DISCARDED, DeadLetterArchive
from .replay.gate import PauseHandler, ProviderHealth
from .replay.replayer import Replayer, ReplayReport

__all__ = [
    "DEFAULT_POLICY",
    "DEFAULT_RECOVERY_CATEGORIES",
    "DlqPolicy",
    "PolicyRule",
    "TriageDecision",
    "TriageReport",
    "process_dlq",
]

logger = logging.getLogger("provider_jobs.dlq.triage")

_ACTIONS = ("replay", "discard", "escalate", "keep")
_WHEN = ("always", "provider_registered")
_MATCH_KEYS = ("category", "provider", "operation", "reason", "fingerprint", "error_contains")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyRule:
    """One rule: a match and an action (see the module docstring)."""

    name: str
    action: str
    category: str | None = None
    provider: str | None = None
    operation: str | None = None
    reason: str | None = None
    fingerprint: str | None = None
    error_contains: str | None = None
    when: str = "always"
    wait_s: float | None = None
    log_level: str = "info"
    webhook_url: str | None = None

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise PolicyError(
                f"rule {self.name!r}: action={self.action!r} is not allowed: expected one of {_ACTIONS}"
            )
        if self.when not in _WHEN:
            raise PolicyError(
                f"rule {self.name!r}: when={self.when!r} is not allowed: expected one of {_WHEN}"
            )
        if self.log_level not in _LEVELS:
            raise PolicyError(
                f"rule {self.name!r}: log_level={self.log_level!r} is not allowed: "
                f"expected one of {tuple(_LEVELS)}"
            )
        if self.wait_s is not None and self.wait_s < 0:
            raise PolicyError(
                f"rule {self.name!r}: wait_s={self.wait_s!r} is not allowed: expected seconds >= 0"
            )

    def matches(self, record: DeadLetter) -> bool:
        if self.provider is not None:
            namespace, _, resource_type = self.provider.partition("/")
            if record.provider_namespace != namespace or (
                resource_type and record.resource_type != resource_type
            ):
                return False
        if self.error_contains is not None and self.error_contains.lower() not in record.error.lower():
            return False
        return all(
            getattr(self, key) is None or getattr(self, key) == getattr(record, key)
            for key in ("category", "operation", "reason", "fingerprint")
        )


#: Dead-letter categories a provider's recovery replays unless the policy says otherwise.
DEFAULT_RECOVERY_CATEGORIES = ("provider_not_found",)


@dataclasses.dataclass(frozen=True)
class DlqPolicy:
    """An ordered list of rules; the first match decides, no match keeps the record.

    ``recovery_categories`` are the dead-letter categories replayed automatically when their
    provider is available again (see :mod:`.recovery`); a policy file sets them with a
    top-level ``recovery_categories`` list.
    """

    rules: tuple[PolicyRule, ...]
    recovery_categories: tuple[str, ...] = DEFAULT_RECOVERY_CATEGORIES

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "policy") -> DlqPolicy:
        """Build a policy from parsed TOML / JSON.

        Raises:
            PolicyError: The rules are missing or not valid.
        """
        rules = data.get("rules")
        if not isinstance(rules, list) or not rules:
            raise PolicyError(f"{source}: expected a non-empty 'rules' list")
        built = []
        for index, rule in enumerate(rules, 1):
            if not isinstance(rule, Mapping):
                raise PolicyError(f"{source}: rule {index} is not a table/object")
            fields = {f.name for f in dataclasses.fields(PolicyRule)}
            unknown = set(rule) - fields
            if unknown:
                raise PolicyError(
                    f"{source}: rule {index} has unknown key(s) {sorted(unknown)}; allowed: {sorted(fields)}"
                )
            try:
                built.append(PolicyRule(**{"name": f"rule-{index}", **rule}))
            except TypeError as exc:
                raise PolicyError(f"{source}: rule {index}: {exc}") from None
        recovery = data.get("recovery_categories", DEFAULT_RECOVERY_CATEGORIES)
        if not isinstance(recovery, list | tuple) or not all(
            isinstance(c, str) and c.isidentifier() for c in recovery
        ):
            raise PolicyError(f"{source}: recovery_categories must be a list of category names")
        return cls(tuple(built), tuple(recovery))

    @classmethod
    def load(cls, path: str | Path) -> DlqPolicy:
        """Read a ``.toml`` or ``.json`` policy file.

        Raises:
            PolicyError: The file cannot be read or parsed, or a rule is not valid.
        """
        path = Path(path)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (OSError, ValueError) as exc:
            raise PolicyError(f"DLQ policy file {path}: {exc}") from None
        return cls.from_dict(data, source=str(path))

    def rule_for(self, record: DeadLetter) -> PolicyRule | None:
        return next((rule for rule in self.rules if rule.matches(record)), None)


#: The daily triage: replay provider-not-found, discard validation failures, escalate the rest.
DEFAULT_POLICY = DlqPolicy(
    (
        PolicyRule(
            name="provider-back",
            category="provider_not_found",
            action="replay",
            when="provider_registered",
            wait_s=3600.0,
        ),
        PolicyRule(name="validation", category="validation", action="discard", log_level="warning"),
        PolicyRule(name="escalate-the-rest", action="escalate"),
    )
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TriageDecision:
    """The rule chosen for one record and what was (or would be) done."""

    record_id: int
    rule: str | None
    action: str
    detail: str
    job_id: str | None = None
    category: str | None = None


@dataclasses.dataclass
class TriageReport:
    decisions: list[TriageDecision] = dataclasses.field(default_factory=list)
    replay: ReplayReport | None = None
    dry_run: bool = False

    def count(self, action: str) -> int:
        return sum(1 for d in self.decisions if d.action == action)


def _decide(
    rule: PolicyRule | None, record: DeadLetter, providers: Container[str] | None, now_ms: int
) -> tuple[str, str]:
    if rule is None or rule.action == "keep":
        return "keep", "no rule matched" if rule is None else "kept by policy"
    if rule.action != "replay" or rule.when == "always":
        return rule.action, f"{rule.action} by rule {rule.name}"
    registered = providers is not None and record.provider is not None and record.provider in providers
    if registered:
        return "replay", f"provider {record.provider} is registered"
    age_s = (now_ms - record.dead_lettered_ms) / 1000
    if rule.wait_s is not None and age_s >= rule.wait_s:
        return "replay", f"dead for {age_s:.0f} s >= wait_s {rule.wait_s:g}"
    return "wait", f"provider {record.provider} not registered; dead for {age_s:.0f} s"


def process_dlq(
    archive: DeadLetterArchive,
    *,
    policy: DlqPolicy = DEFAULT_POLICY,
    replayer: Replayer | None = None,
    providers: Container[str] | None = None,
    dry_run: bool = False,
    who: str = "dlq-process",
    limit: int = 10_000,
    now_ms: int | None = None,
    redactor: Redactor | None = None,
    health: ProviderHealth | None = None,
    on_pause: PauseHandler | None = None,
) -> TriageReport:
    """Triage dead records by ``policy``.

    Args:
        archive: The archive.
        policy: The rules. Default :data:`DEFAULT_POLICY`.
        replayer: Sends replays; required unless ``dry_run`` or no rule replays.
        providers: ``Namespace/ResourceType`` keys registered now (a
            :class:`~provider_jobs.providers.ProviderRegistry` is one).
        dry_run: Decide and report only.
        who: Name written to the audit log.
        limit: Most records looked at in one run (oldest first).
        now_ms: The time decisions are made at. Default now.
        redactor: Masks the records a webhook is sent (secret values, URL
            passwords) and caps their size. Default: a :class:`~provider_jobs.redaction.Redactor`
            with the default keys.
        health: The providers' health (:func:`~provider_jobs.health.follow_breakers`): the
            records a rule replays wait while their provider's breaker is open, as in any
            replay (:meth:`Replayer.replay`). Default: sent whatever the breakers say.
        on_pause: Told when a provider's records start or stop being held back.

    Raises:
        PolicyError: A record should be replayed but no ``replayer`` was given.
    """
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    report = TriageReport(dry_run=dry_run)
    records = archive.find(RecordFilter(statuses=[DEAD]), limit=limit, oldest_first=True)
    to_replay: list[int] = []
    to_discard: dict[str, list[DeadLetter]] = {}
    to_escalate: dict[str | None, list[DeadLetter]] = {}
    for record in records:
        assert record.id is not None
        rule = policy.rule_for(record)
        action, detail = _decide(rule, record, providers, now)
        if action == "escalate" and record.escalated_ms is not None:
            action, detail = "keep", "escalated before"
        report.decisions.append(
            TriageDecision(
                record_id=record.id,
                rule=rule.name if rule else None,
                action=action,
                detail=detail,
                job_id=record.job_id,
                category=record.category,
            )
        )
        if action == "replay":
            to_replay.append(record.id)
        elif action == "discard" and rule is not None:
            to_discard.setdefault(rule.name, []).append(record)
        elif action == "escalate" and rule is not None:
            to_escalate.setdefault(rule.webhook_url, []).append(record)
    if dry_run:
        return report

    rules = {r.name: r for r in policy.rules}
    for name, discarded in to_discard.items():
        level = _LEVELS[rules[name].log_level]
        for record in discarded:
            logger.log(
                level,
                "Discarding dead letter %s (job %s, %s): %s",
                record.id,
                record.job_id,
                record.category,
                record.error,
            )
        archive.set_status(
            RecordFilter(ids=[r.id for r in discarded if r.id is not None], statuses=[DEAD]),
            DISCARDED,
            who=who,
            reason=f"policy rule {name}",
            action="discard",
        )
    for webhook_url, escalated in to_escalate.items():
        for record in escalated:
            logger.error(
                "Escalating dead letter %s (job %s, %s, %s): %s",
                record.id,
                record.job_id,
                record.provider,
                record.category,
                record.error,
            )
        if webhook_url and not _post_webhook(webhook_url, escalated, redactor or Redactor()):
            continue
        archive.mark_escalated(
            [r.id for r in escalated if r.id is not None],
            who=who,
            reason="policy",
            details={"webhook": webhook_url},
        )
    if to_replay:
        if replayer is None:
            raise PolicyError("the policy replays dead letters but no replayer (broker) was given")
        report.replay = replayer.replay(to_replay, reason="dlq process", health=health, on_pause=on_pause)
    return report


def _post_webhook(url: str, records: Sequence[DeadLetter], redactor: Redactor) -> bool:
    left_out = ("traceback", "attempt_history", "headers", "x_death", "body")
    payload = {"escalated": [{**redactor.view(r, omit=left_out), "provider": r.provider} for r in records]}
    try:
        response = httpx.post(url, json=payload, timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        logger.error(
            "Escalation webhook %s failed (%s: %s); the records will be escalated again next run",
            redactor.text(url),
            type(exc).__name__,
            exc,
        )
        return False
    return True
