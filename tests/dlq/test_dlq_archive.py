from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from dlq_support import dramatiq_body

from provider_jobs.dlq import DeadLetterArchive, RecordFilter, ReplayMark, dead_letter_from_delivery
from provider_jobs.errors import RecordNotFound


def _record(
    error: str = "No provider found for ITL.Core/ResourceGroup",
    category: str = "provider_not_found",
    *,
    dead_ms: int | None = None,
    **job_fields: object,
):
    body = dramatiq_body(
        "provider.jobs",
        options={
            "dead_letter": {
                "reason": "exhausted",
                "category": category,
                "error": error,
                "attempts": 3,
                "dead_lettered_at_ms": dead_ms or int(time.time() * 1000),
            }
        },
        **job_fields,
    )
    return dead_letter_from_delivery(body, {}, source_queue="provider.jobs.XQ")


def test_a_redelivered_dead_letter_is_stored_once(archive: DeadLetterArchive) -> None:
    record = _record()
    assert archive.store([record, record]) == [record.dedupe_key]
    assert archive.store([record]) == []
    assert archive.count() == 1


def test_a_batch_holding_an_archived_record_is_stored_and_indexed_once(archive: DeadLetterArchive) -> None:
    first, second = _record(job_id="job-first"), _record(job_id="job-second")
    archive.store([first])
    # The batch's insert is rolled back and the batch stored again record by record.
    assert archive.store([second, first]) == [second.dedupe_key]
    assert [r.job_id for r in archive.find(RecordFilter(text="job-second"))] == ["job-second"]
    assert archive.count(RecordFilter(text="job-")) == 2
    assert [g.count for g in archive.groups()] == [2]


def test_find_filters_and_pages_newest_first(archive: DeadLetterArchive) -> None:
    now = int(time.time() * 1000)
    old = _record(dead_ms=now - 3_600_000, job_id="old-job")
    new = _record(dead_ms=now, job_id="new-job")
    other = _record(
        "Validation error: bad name",
        "validation",
        dead_ms=now - 1000,
        namespace="ITL.Net",
        resource_type="Vnet",
    )
    archive.store([old, new, other])
    assert [r.job_id for r in archive.find()] == ["new-job", other.job_id, "old-job"]
    assert [r.job_id for r in archive.find(limit=1, offset=1)] == [other.job_id]
    assert [r.job_id for r in archive.find(RecordFilter(category="validation"))] == [other.job_id]
    assert [r.job_id for r in archive.find(RecordFilter.for_provider("ITL.Core/ResourceGroup"))] == [
        "new-job",
        "old-job",
    ]
    assert [r.job_id for r in archive.find(RecordFilter(since_ms=now - 60_000, text="PROVIDER found"))] == [
        "new-job"
    ]
    assert archive.count(RecordFilter(text="new-job")) == 1


def test_groups_count_per_fingerprint_largest_first(archive: DeadLetterArchive) -> None:
    archive.store([_record() for _ in range(3)] + [_record("Validation error: x", "validation")])
    groups = archive.groups()
    assert [(g.count, g.category) for g in groups] == [(3, "provider_not_found"), (1, "validation")]
    assert groups[0].sample_error == "No provider found for ITL.Core/ResourceGroup"
    assert groups[0].first_seen_ms <= groups[0].last_seen_ms


def test_only_one_of_two_concurrent_claims_wins(archive_url: str) -> None:
    first = DeadLetterArchive(archive_url)
    first.store([_record()])
    archives = [DeadLetterArchive(archive_url) for _ in range(8)]
    barrier = threading.Barrier(len(archives))
    won: list[list[int]] = []

    def claim(a: DeadLetterArchive) -> None:
        barrier.wait()
        won.append(a.claim_many([1])[1])

    threads = [threading.Thread(target=claim, args=(a,)) for a in archives]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [[]] * 7 + [[1]]
    for a in [first, *archives]:
        a.close()


def test_retention_purges_old_records_and_the_cap_never_evicts_unhandled_ones(
    archive: DeadLetterArchive,
) -> None:
    archive.store([_record() for _ in range(5)])
    handled = archive.find(oldest_first=True)[:2]
    archive.set_status(
        RecordFilter(ids=[r.id for r in handled]), "discarded", who="t", reason="x", action="discard"
    )
    report = archive.apply_retention(retention_days=30, max_records=1)
    assert (report.expired, report.evicted, report.records, report.over_cap) == (0, 2, 3, 2)
    assert archive.count(RecordFilter(statuses=["dead"])) == 3
    later = int(time.time() * 1000) + 31 * 86_400_000
    report = archive.apply_retention(retention_days=30, max_records=100, now_ms=later)
    assert (report.expired, report.records) == (3, 0)
    assert [e.action for e in archive.audit()][:2] == ["retention", "retention"]


def test_discard_and_purge_are_audited(archive: DeadLetterArchive) -> None:
    archive.store([_record(), _record()])
    assert archive.set_status(
        RecordFilter(ids=[1]), "discarded", who="alice", reason="bad data", action="discard"
    ) == [1]
    assert archive.purge(RecordFilter(statuses=["discarded"]), who="bob", reason="cleanup") == 1
    entries = archive.audit()
    assert [(e.who, e.action, e.record_id, e.reason) for e in entries] == [
        ("bob", "purge", None, "cleanup"),
        ("alice", "discard", 1, "bad data"),
    ]
    with pytest.raises(RecordNotFound):
        archive.get(1)


def test_archives_opening_a_fresh_sqlite_file_at_once_all_create_it_without_a_lock_error(
    tmp_path: Path,
) -> None:
    errors: list[BaseException] = []
    for attempt in range(5):
        url = f"sqlite:///{tmp_path}/fresh-{attempt}.sqlite3"
        archives = [DeadLetterArchive(url, busy_timeout_ms=5000) for _ in range(8)]
        barrier = threading.Barrier(len(archives))

        def open_it(archive: DeadLetterArchive, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                archive.check()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it, args=(a,)) for a in archives]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        for archive in archives:
            archive.close()
    assert errors == []


def test_concurrent_batch_claims_win_each_record_once(archive_url: str) -> None:
    first = DeadLetterArchive(archive_url)
    first.store([_record() for _ in range(50)])
    ids = first.ids(RecordFilter())
    archives = [DeadLetterArchive(archive_url) for _ in range(4)]
    barrier = threading.Barrier(len(archives))
    won: list[list[int]] = []

    def claim(a: DeadLetterArchive) -> None:
        barrier.wait()
        won.append(a.claim_many(ids)[1])

    threads = [threading.Thread(target=claim, args=(a,)) for a in archives]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(i for w in won for i in w) == sorted(ids)
    for a in [first, *archives]:
        a.close()


def test_a_batch_of_replays_is_marked_and_audited_under_its_claim(archive: DeadLetterArchive) -> None:
    archive.store([_record() for _ in range(3)])
    ids = archive.ids(RecordFilter())
    token, won = archive.claim_many(ids[:2])
    marks = [ReplayMark(record_id=i, message_id=f"m{i}") for i in won]
    lost = archive.mark_replayed_many(
        [*marks, ReplayMark(record_id=ids[2], message_id="x")], token, who="bob"
    )
    assert lost == [ids[2]]
    assert [(r.status, r.replay_message_ids) for r in map(archive.get, ids)] == [
        ("replayed", [f"m{ids[0]}"]),
        ("replayed", [f"m{ids[1]}"]),
        ("dead", []),
    ]
    assert sorted(e.record_id for e in archive.audit() if e.action == "replay") == ids[:2]


def test_a_batch_of_replays_is_audited_with_its_action_reason_and_details(
    archive: DeadLetterArchive,
) -> None:
    archive.store([_record() for _ in range(2)])
    ids = archive.ids(RecordFilter())
    token, won = archive.claim_many(ids)
    marks = [
        ReplayMark(record_id=won[0], message_id="m0"),
        ReplayMark(record_id=won[1], message_id="m1", action="replay_edited", details={"queue": "q"}),
    ]
    archive.mark_replayed_many(marks, token, who="bob", reason="provider fixed")
    entries = {e.record_id: e for e in archive.audit() if e.action.startswith("replay")}
    assert [(entries[i].who, entries[i].action, entries[i].reason, entries[i].details) for i in won] == [
        ("bob", "replay", "provider fixed", {"message_id": "m0"}),
        ("bob", "replay_edited", "provider fixed", {"message_id": "m1", "queue": "q"}),
    ]


def test_a_batch_replayed_again_keeps_its_earlier_message_ids(archive: DeadLetterArchive) -> None:
    archive.store([_record()])
    ids = archive.ids(RecordFilter())
    for message_id in ("first", "second"):
        token, won = archive.claim_many(ids, allow_statuses=("dead", "replayed"))
        archive.mark_replayed_many([ReplayMark(record_id=won[0], message_id=message_id)], token, who="bob")
    record = archive.get(ids[0])
    assert (record.status, record.replay_count, record.replay_message_ids) == (
        "replayed",
        2,
        ["first", "second"],
    )


def test_a_batch_claim_takes_over_a_stale_claim_only(archive_url: str) -> None:
    # A negative time to live makes every claim stale at once, without waiting for one to age.
    stale = DeadLetterArchive(archive_url, claim_ttl_s=-1.0)
    stale.store([_record() for _ in range(2)])
    ids = stale.ids(RecordFilter())
    stale.claim_many(ids)
    fresh = DeadLetterArchive(archive_url)
    assert fresh.claim_many(ids)[1] == []
    assert stale.claim_many(ids)[1] == ids
    for a in (stale, fresh):
        a.close()


def test_released_batch_claims_can_be_claimed_again(archive: DeadLetterArchive) -> None:
    archive.store([_record() for _ in range(2)])
    ids = archive.ids(RecordFilter())
    token, won = archive.claim_many(ids)
    assert archive.claim_many(ids)[1] == []
    archive.release_many(won, token)
    assert archive.claim_many(ids)[1] == ids
