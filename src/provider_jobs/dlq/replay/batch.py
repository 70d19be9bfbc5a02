"""One replay batch, as both send strategies handle it: claimed, published, settled.

:mod:`.overlapped` and :mod:`.paced` differ in when they claim a batch's records
and how they space its messages; what a batch holds at each step, and how it is
claimed, published and settled, is here.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ...errors import BrokerUnavailable
from ...rabbitmq.bulk import NOT_SENT, BulkPublisher, BulkResult, OutgoingMessage, PublishFailure
from ..archive.store import DeadLetterArchive
from .message import outgoing
from .report import ReplayOutcome, ReplayPlan, record_id_of, unsent
from .settlement import settle

__all__ = ["ClaimedBatch", "Emit", "SendContext", "SentBatch", "claim_batch", "settle_batch"]

#: The replay's logger, shared by its send strategies.
logger = logging.getLogger("provider_jobs.dlq.replay.replayer")

#: Hands settled outcomes on, in order (to the report and the caller's ``on_outcome``).
Emit = Callable[[Sequence[ReplayOutcome]], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SendContext:
    """What every batch of one :meth:`~.replayer.Replayer.replay` call shares."""

    archive: DeadLetterArchive
    who: str
    tracer: Any
    allowed: Sequence[str]
    reason: str | None
    audit: dict[str, Any]


@dataclasses.dataclass
class ClaimedBatch:
    """One batch after its claim: the records to send, the claims won, outcomes so far."""

    candidates: list[tuple[int, ReplayPlan[Any]]] = dataclasses.field(default_factory=list)
    outcomes: dict[int, ReplayOutcome] = dataclasses.field(default_factory=dict)
    token: str = ""
    won: list[int] = dataclasses.field(default_factory=list)

    def in_order(self) -> list[ReplayOutcome]:
        """The batch's outcomes in the order of its records."""
        return [self.outcomes[position] for position in sorted(self.outcomes)]


@dataclasses.dataclass
class SentBatch:
    """One batch after its publish: the records handed to RabbitMQ, their messages, the result."""

    taken: list[tuple[int, ReplayPlan[Any]]] = dataclasses.field(default_factory=list)
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    result: BulkResult = dataclasses.field(default_factory=BulkResult)
    #: The messages' ``send`` spans (with a tracer) by their index, open until :meth:`publish` ends.
    spans: list[tuple[int, Any]] = dataclasses.field(default_factory=list)

    def take(self, position: int, plan: ReplayPlan[Any], *, tracer: Any) -> OutgoingMessage:
        """Build the plan's fresh message, noting it as handed to RabbitMQ."""
        assert plan.message is not None
        self.taken.append((position, plan))
        message, outgoing_message, span = outgoing(plan.message, tracer=tracer)
        self.messages.append(message)
        if span is not None:
            self.spans.append((len(self.messages) - 1, span))
        return outgoing_message

    def publish(self, publisher: BulkPublisher, messages: Iterable[OutgoingMessage]) -> None:
        """Publish ``messages`` with their confirms in flight, note the result and end the
        messages' ``send`` spans by it; a lost broker fails them all as not sent.

        Raises:
            BaseException: Whatever else stopped the publish, once the spans are ended by it.
        """
        try:
            self.result = publisher.publish_many(messages)
        except BrokerUnavailable as exc:
            self.result = BulkResult(failures=[PublishFailure(0, NOT_SENT, str(exc))])
        except BaseException as exc:
            stopped = exc
            self._end_spans(lambda index: stopped)
            raise
        if self.spans:
            confirmed = set(self.result.confirmed)
            failures = {f.index: f"{f.status}: {f.detail}" for f in self.result.failures}
            self._end_spans(
                lambda index: (
                    None if index in confirmed else failures.get(index, "not sent: the batch stopped")
                )
            )

    def _end_spans(self, error_of: Callable[[int], BaseException | str | None]) -> None:
        if not self.spans:
            return
        from ...tracing.open_sends import end_send

        for index, span in self.spans:
            end_send(span, error_of(index))
        self.spans.clear()


def claim_batch(chunk: Sequence[ReplayPlan[Any]], context: SendContext, *, claim_all: bool) -> ClaimedBatch:
    """Sort out the chunk's sendable records and open their claim token; with ``claim_all``
    also claim them all at once (unpaced), else none yet (paced: each when it is due).
    """
    claimed = ClaimedBatch()
    for position, plan in enumerate(chunk):
        if plan.message is None:
            claimed.outcomes[position] = unsent(plan, dry_run=False)
        else:
            claimed.candidates.append((position, plan))
    claimed.token, claimed.won = context.archive.claim_many(
        [record_id_of(p) for _, p in claimed.candidates] if claim_all else [],
        allow_statuses=context.allowed,
    )
    return claimed


def settle_batch(claimed: ClaimedBatch, sent: SentBatch, context: SendContext) -> list[ReplayOutcome]:
    """Mark the batch's confirmed records replayed and release its other claims; its outcomes in order."""
    settle(
        context.archive,
        claimed.candidates,
        sent.taken,
        sent.messages,
        sent.result,
        token=claimed.token,
        who=context.who,
        reason=context.reason,
        audit=context.audit,
        outcomes=claimed.outcomes,
    )
    return claimed.in_order()
