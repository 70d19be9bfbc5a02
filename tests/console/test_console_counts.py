"""The records page's counts (read from the group summary, or counted up to a cap) and its
pages (one query per status, merged) agree with the archive's own count and order."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from provider_jobs.console import pages
from provider_jobs.console.pages import count_matches, newest_page
from provider_jobs.dlq import DISCARDED, DeadLetterArchive, RecordFilter, dead_letter_from_delivery

CAUSES = [
    ("validation", "ITL.Core", "ResourceGroup"),
    ("timeout", "ITL.Demo", "Flaky"),
    ("timeout", "ITL.Core", "Vm"),
]


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[DeadLetterArchive]:
    archive = DeadLetterArchive(f"sqlite:///{tmp_path}/archive.sqlite3")
    base = dead_letter_from_delivery(b"not a message", {}, source_queue="q.XQ")
    records = [
        dataclasses.replace(
            base,
            dedupe_key=f"r{i}",
            category=category,
            provider_namespace=namespace,
            resource_type=resource_type,
            fingerprint=f"fp-{category}-{resource_type}",
            dead_lettered_ms=1_800_000_000_000 + (i * 7919) % 50 * 1000,
        )
        for i in range(60)
        for category, namespace, resource_type in [CAUSES[i % 3]]
    ]
    archive.store(records)
    archive.set_status(
        RecordFilter(ids=list(range(1, 61, 4))), DISCARDED, who="t", reason="r", action="discard"
    )
    yield archive
    archive.close()


FILTERS = [
    RecordFilter(),
    RecordFilter(statuses=["dead"]),
    RecordFilter(statuses=["discarded"], category="timeout"),
    RecordFilter(category="validation"),
    RecordFilter.for_provider("ITL.Core"),
    RecordFilter.for_provider("ITL.Core/Vm", statuses=["dead"]),
    RecordFilter(fingerprint="fp-timeout-Flaky"),
    RecordFilter(since_ms=1_800_000_020_000),
]


@pytest.mark.parametrize("record_filter", FILTERS, ids=lambda f: str(f.describe()))
def test_the_count_shown_is_the_archives_count(
    archive: DeadLetterArchive, record_filter: RecordFilter
) -> None:
    assert count_matches(archive, record_filter) == (archive.count(record_filter), True)


def test_past_the_cap_the_count_says_more_than(
    archive: DeadLetterArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "COUNT_CAP", 10)
    assert count_matches(archive, RecordFilter(text="not")) == (10, False)
    assert count_matches(archive, RecordFilter(since_ms=1_800_000_048_000)) == (
        archive.count(RecordFilter(since_ms=1_800_000_048_000)),
        True,
    )


@pytest.mark.parametrize("record_filter", FILTERS, ids=lambda f: str(f.describe()))
def test_pages_merged_per_status_are_the_archives_pages(
    archive: DeadLetterArchive, record_filter: RecordFilter
) -> None:
    everything = archive.find(record_filter, limit=100)
    walked, before = [], None
    while page := newest_page(archive, record_filter, limit=7, before=before):
        walked += page
        before = (page[-1].dead_lettered_ms, page[-1].id or 0)
    assert [r.id for r in walked] == [r.id for r in everything]
