"""RecordFilter and the small value types the archive answers with."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from .search import SearchMatch, search_terms

__all__ = ["AuditEntry", "Group", "RecordFilter", "RetentionReport"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordFilter:
    """Which archived dead letters an operation applies to; every field set must match.

    Args:
        ids: Archive ids.
        statuses: ``dead``, ``replayed``, ``discarded``.
        category: Error category, e.g. ``provider_not_found``.
        provider_namespace: e.g. ``ITL.Core``.
        resource_type: e.g. ``ResourceGroup``.
        operation: e.g. ``create``.
        fingerprint: A group's fingerprint.
        queue_name: The queue the job was sent to.
        since_ms: Dead-lettered at or after (ms since the epoch).
        until_ms: Dead-lettered before (ms since the epoch).
        text: A search (:mod:`.search`): words, or ``"quoted phrases"``, each a
            case-insensitive substring of the record's error type, error, provider,
            operation, job id, message id or request (secrets masked), all required.
        not_escalated: Only records triage has not escalated yet.
    """

    ids: Sequence[int] | None = None
    statuses: Sequence[str] | None = None
    category: str | None = None
    provider_namespace: str | None = None
    resource_type: str | None = None
    operation: str | None = None
    fingerprint: str | None = None
    queue_name: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    text: str | None = None
    not_escalated: bool = False

    @classmethod
    def for_provider(cls, provider: str | None, **fields: Any) -> RecordFilter:
        """A filter whose provider is given as ``Namespace`` or ``Namespace/ResourceType``."""
        if provider:
            namespace, _, resource_type = provider.partition("/")
            fields.update(provider_namespace=namespace or None, resource_type=resource_type or None)
        return cls(**fields)

    def clauses(self, table: sa.Table) -> list[sa.ColumnElement[bool]]:
        """SQL conditions selecting the matching rows of ``table``."""
        c = table.c
        where: list[sa.ColumnElement[bool]] = []
        if self.ids is not None:
            where.append(c.id.in_(list(self.ids)))
        if self.statuses:
            where.append(c.status.in_(list(self.statuses)))
        for name in (
            "category",
            "provider_namespace",
            "resource_type",
            "operation",
            "fingerprint",
            "queue_name",
        ):
            value = getattr(self, name)
            if value is not None:
                where.append(c[name] == value)
        if self.since_ms is not None:
            where.append(c.dead_lettered_ms >= self.since_ms)
        if self.until_ms is not None:
            where.append(c.dead_lettered_ms < self.until_ms)
        if self.text and (terms := search_terms(self.text)):
            where.append(SearchMatch(table, terms))
        if self.not_escalated:
            where.append(c.escalated_ms.is_(None))
        return where

    def describe(self) -> dict[str, Any]:
        """The fields that are set, for logs and the audit log."""
        return {
            k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
            for k, v in dataclasses.asdict(self).items()
            # ``is``, not ``in``: 0 == False, and since_ms=0 is a filter that is set.
            if v is not None and v is not False
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Group:
    """Dead letters sharing one fingerprint: one cause."""

    fingerprint: str
    count: int
    first_seen_ms: int
    last_seen_ms: int
    category: str
    provider_namespace: str | None
    resource_type: str | None
    operation: str | None
    sample_error: str
    latest_id: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditEntry:
    """Who did what to which record, when and why."""

    id: int
    at_ms: int
    who: str
    action: str
    record_id: int | None
    reason: str | None
    details: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetentionReport:
    """What one retention pass did."""

    expired: int
    evicted: int
    records: int
    over_cap: int
