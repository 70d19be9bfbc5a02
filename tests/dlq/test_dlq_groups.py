from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from test_dlq_archive import _record

from provider_jobs.dlq import DeadLetterArchive, RecordFilter, ReplayMark
from provider_jobs.dlq.archive.versions import VERSION_TABLE


def _summary(archive: DeadLetterArchive, record_filter: RecordFilter | None = None) -> list[tuple]:
    return [
        (g.fingerprint, g.count, g.first_seen_ms, g.last_seen_ms, g.latest_id, g.sample_error)
        for g in archive.groups(record_filter, limit=1000)
    ]


def _recounted(archive: DeadLetterArchive, statuses: list[str]) -> list[tuple]:
    """The groups counted from the records, as the summary should hold them."""
    found = archive.find(RecordFilter(statuses=statuses), limit=10_000)
    by_fingerprint: dict[str, list] = {}
    for record in found:
        by_fingerprint.setdefault(record.fingerprint, []).append(record)
    rows = []
    for fingerprint, records in by_fingerprint.items():
        latest = max(records, key=lambda r: (r.dead_lettered_ms, r.id))
        rows.append(
            (
                fingerprint,
                len(records),
                min(r.dead_lettered_ms for r in records),
                latest.dead_lettered_ms,
                latest.id,
                latest.error,
            )
        )
    return sorted(rows, key=lambda row: (-row[1], -row[3]))


def _mixed(now: int) -> list:
    return [
        *(_record(dead_ms=now - i * 1000) for i in range(5)),
        *(_record("Validation error: x", "validation", dead_ms=now - i) for i in range(3)),
        _record("Timeout after 30 s", "timeout", dead_ms=now - 50_000),
    ]


def test_the_group_summary_follows_stores_status_changes_purges_and_retention(
    archive: DeadLetterArchive,
) -> None:
    now = int(time.time() * 1000)
    archive.store(_mixed(now))
    assert _summary(archive, RecordFilter(statuses=["dead"])) == _recounted(archive, ["dead"])
    assert [g.count for g in archive.groups()] == [5, 3, 1]

    newest = archive.find(RecordFilter(category="provider_not_found"), limit=1)[0]
    archive.set_status(RecordFilter(ids=[newest.id]), "discarded", who="t", reason=None, action="discard")
    replayed_id = archive.find(RecordFilter(category="validation"), limit=1)[0].id
    token, won = archive.claim_many([replayed_id])
    assert won == [replayed_id]
    lost = archive.mark_replayed_many([ReplayMark(record_id=replayed_id, message_id="m-1")], token, who="t")
    assert lost == []
    for statuses in (["dead"], ["discarded"], ["replayed"], ["dead", "replayed", "discarded"]):
        assert _summary(archive, RecordFilter(statuses=statuses)) == _recounted(archive, statuses), statuses

    archive.purge(RecordFilter(category="timeout"), who="t", reason=None)
    archive.apply_retention(retention_days=30, max_records=5)  # evicts the two handled records
    assert _summary(archive, RecordFilter(statuses=["dead"])) == _recounted(archive, ["dead"])
    assert [g.count for g in archive.groups()] == [4, 2]
    assert archive.groups(RecordFilter(statuses=["discarded", "replayed"])) == []


def test_groups_filtered_by_category_or_provider_come_from_the_summary_and_match_a_recount(
    archive: DeadLetterArchive,
) -> None:
    archive.store(_mixed(int(time.time() * 1000)))
    by_summary = archive.groups(RecordFilter.for_provider("ITL.Core/ResourceGroup", category="validation"))
    # A time bound is not in the summary: the same groups, counted from the records.
    by_records = archive.groups(
        RecordFilter.for_provider("ITL.Core/ResourceGroup", category="validation", since_ms=0)
    )
    assert [(g.fingerprint, g.count, g.first_seen_ms, g.last_seen_ms) for g in by_summary] == [
        (g.fingerprint, g.count, g.first_seen_ms, g.last_seen_ms) for g in by_records
    ]
    assert [g.count for g in by_summary] == [3]


def test_an_archive_made_before_the_summary_is_counted_when_upgraded(archive_url: str) -> None:
    archive = DeadLetterArchive(archive_url)
    archive.store(_mixed(int(time.time() * 1000)))
    engine = archive._engine_ready()
    with engine.begin() as conn:
        conn.execute(sa.schema.DropTable(archive.tables.groups))
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
    archive.close()

    reopened = DeadLetterArchive(archive_url)
    reopened.upgrade()
    assert [g.count for g in reopened.groups()] == [5, 3, 1]
    assert _summary(reopened, RecordFilter(statuses=["dead"])) == _recounted(reopened, ["dead"])
    reopened.close()


def test_a_batch_mixing_new_and_redelivered_dead_letters_stores_and_counts_only_the_new(
    archive: DeadLetterArchive,
) -> None:
    first, second, third = _record(), _record(), _record()
    assert archive.store([first]) == [first.dedupe_key]
    assert sorted(archive.store([second, first, third])) == sorted([second.dedupe_key, third.dedupe_key])
    assert archive.count() == 3
    assert [g.count for g in archive.groups()] == [3]


def test_concurrent_archivers_of_one_group_leave_an_exact_summary(archive_url: str) -> None:
    archives = [DeadLetterArchive(archive_url, busy_timeout_ms=10_000) for _ in range(4)]
    archives[0].check()
    barrier = threading.Barrier(len(archives))
    now = int(time.time() * 1000)

    def store(a: DeadLetterArchive, k: int) -> None:
        barrier.wait()
        for batch in range(10):
            a.store([_record(dead_ms=now + k * 1000 + batch * 10 + i) for i in range(5)])

    threads = [threading.Thread(target=store, args=(a, k)) for k, a in enumerate(archives)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _summary(archives[0], RecordFilter(statuses=["dead"])) == _recounted(archives[0], ["dead"])
    assert [g.count for g in archives[0].groups()] == [200]
    for a in archives:
        a.close()


def test_rebuild_groups_counts_records_written_around_the_archive(archive: DeadLetterArchive) -> None:
    archive.store(_mixed(int(time.time() * 1000)))
    with archive._engine_ready().begin() as conn:
        conn.execute(archive.tables.groups.delete())
    assert archive.groups() == []
    archive.rebuild_groups()
    assert [g.count for g in archive.groups()] == [5, 3, 1]
    assert _summary(archive, RecordFilter(statuses=["dead"])) == _recounted(archive, ["dead"])
