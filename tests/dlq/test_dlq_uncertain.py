"""Records an interrupted operation cannot vouch for: no replay path sends them, even once their
claim has expired, until an operator resolves them as sent or not sent."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from test_dlq_operations import _replay_of
from test_dlq_replay import _store

from provider_jobs.dlq import DeadLetterArchive, Replayer, process_dlq
from provider_jobs.dlq.operations import Operations
from provider_jobs.dlq.recovery import recovery_plan
from provider_jobs.settings import Settings

from support import declare_work_queue, queue_depth

PROVIDER = "ITL.Core/ResourceGroup"


def _interrupted_with_two_uncertain(
    archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> tuple[Operations, int, list[int]]:
    """An operation over five records whose runner died with all five handed over: the first
    three replayed and marked, the last two claimed (maybe published), then resumed."""
    declare_work_queue(amqp, settings.queue_name)
    ids = _store(archive, settings, 5)
    ops = Operations(archive, broker_url=settings.broker_url)
    op_id = ops.start_replay(ids, who="carol", selection={"ids": 5})
    archive.begin_sending(op_id, list(range(5)))
    Replayer(archive=archive, broker_url=settings.broker_url, who="carol").replay(ids[:3])
    archive.claim_many(ids[3:])
    archive.set_operation_state(op_id, "running", runner="elsewhere:1")  # a runner long gone
    with archive._write("ageing the heartbeat and the claims") as conn:
        conn.execute(archive.tables.operations.update().values(heartbeat_ms=0))
    done = ops.resume(op_id)
    assert (done.state, done.counts) == ("done", {"sent": 3, "uncertain": 2})
    with archive._write("expiring the claims") as conn:
        conn.execute(
            archive.records.update().where(archive.records.c.claim_token.is_not(None)).values(claimed_ms=0)
        )
    assert sorted(_replay_of(amqp, settings.queue_name)) == sorted(ids[:3])
    return ops, op_id, ids


def test_an_uncertain_record_is_sent_by_no_replay_once_its_claim_expired(
    archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    ops, _, ids = _interrupted_with_two_uncertain(archive, settings, amqp)
    uncertain = ids[3:]
    assert {archive.get(i).status for i in uncertain} == {"uncertain"}
    assert sorted(e.record_id for e in archive.audit(action="uncertain")) == sorted(uncertain)
    assert archive.totals() == {("replayed", "provider_not_found"): 3, ("uncertain", "provider_not_found"): 2}
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="dave")
    # A single replay, forced or not, and a replay operation skip them and say why.
    for force in (False, True):
        report = replayer.replay(uncertain, force=force)
        assert [o.status for o in report.outcomes] == ["skipped", "skipped"]
        assert all("uncertain" in (o.detail or "") for o in report.outcomes)
    _, report = ops.replay(uncertain, who="dave", selection={"ids": 2}, force=True)
    assert report.published == 0
    # Triage (whose default policy replays these: their provider is registered) and the
    # recovery replay pass them by.
    triage = process_dlq(archive, replayer=replayer, providers={PROVIDER})
    assert not {d.record_id for d in triage.decisions} & set(uncertain)
    assert not set(recovery_plan(archive, PROVIDER, ("provider_not_found",)).record_ids) & set(uncertain)
    assert queue_depth(amqp, settings.queue_name) == 0
    assert {archive.get(i).status for i in uncertain} == {"uncertain"}


def test_resolving_says_which_were_sent_and_returns_the_others_to_the_dead_letters(
    archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    ops, op_id, ids = _interrupted_with_two_uncertain(archive, settings, amqp)
    ran, not_sent = ids[3], ids[4]
    assert ops.resolve(op_id, sent=True, who="erin", reason="its job ran", record_ids=[ran]) == [ran]
    assert ops.resolve(op_id, sent=False, who="erin") == [not_sent]
    assert ops.resolve(op_id, sent=False, who="erin") == []  # nothing left to resolve
    record = archive.get(ran)
    assert (record.status, record.replay_count) == ("replayed", 1)
    assert archive.get(not_sent).status == "dead"
    with archive._read("reading the claims") as conn:
        claims = conn.execute(sa.select(archive.records.c.claim_token).where(archive.records.c.id.in_(ids)))
        assert {token for (token,) in claims} == {None}
    after = ops.get(op_id)
    assert after.counts == {"sent": 4, "skipped": 1}
    [skipped] = ops.records(op_id, states=["skipped"])
    assert skipped.detail == "resolved by erin: not sent; a dead letter awaiting action again"
    resolved = [e for e in archive.audit() if e.action == "resolve"]
    assert sorted((e.record_id, e.details["sent"]) for e in resolved) == sorted(
        [(ran, True), (not_sent, False)]
    )
    # The group summary follows the records' statuses.
    assert archive.totals() == {("dead", "provider_not_found"): 1, ("replayed", "provider_not_found"): 4}
    # The one not sent is a dead letter like any other: a replay sends it, once.
    report = Replayer(archive=archive, broker_url=settings.broker_url, who="erin").replay([not_sent])
    assert report.published == 1
    assert _replay_of(amqp, settings.queue_name) == [not_sent]


def test_retention_never_evicts_an_uncertain_record_for_the_cap(
    archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    _, _, ids = _interrupted_with_two_uncertain(archive, settings, amqp)
    archive.apply_retention(retention_days=365, max_records=1)
    assert sorted(r.id for r in archive.find(limit=10)) == sorted(ids[3:])
