"""Text search of the archive: one syntax, a trigram index on both databases, secrets never indexed."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from provider_jobs.api import create_app
from provider_jobs.dlq import DeadLetterArchive, RecordFilter, dead_letter_from_delivery
from provider_jobs.dlq.archive import search
from provider_jobs.dlq.archive.records import DeadLetter
from provider_jobs.dlq.archive.search import SearchDocuments, search_terms
from provider_jobs.dlq.cli.app import dlq_app
from provider_jobs.redaction import Redactor
from provider_jobs.settings import Settings


def _dead_letter(
    job_id: str,
    *,
    error: str = "Upstream said no",
    request: dict[str, Any] | None = None,
    namespace: str = "ITL.Core",
    resource_type: str = "ResourceGroup",
    operation: str = "create",
) -> DeadLetter:
    body = json.dumps(
        {
            "queue_name": "provider.jobs",
            "actor_name": f"{operation}_resource",
            "args": [],
            "kwargs": {
                "job": {
                    "job_id": job_id,
                    "provider_namespace": namespace,
                    "resource_type": resource_type,
                    "operation": operation,
                    "request": request if request is not None else {"name": f"rg-{job_id}"},
                }
            },
            "options": {
                "dead_letter": {"category": "validation", "error": error, "error_type": "ProviderError"}
            },
            "message_id": str(uuid.uuid4()),
            "message_timestamp": 1_800_000_000_000,
        }
    ).encode()
    return dead_letter_from_delivery(body, {}, source_queue="provider.jobs.XQ")


def _found(archive: DeadLetterArchive, text: str) -> list[str | None]:
    return sorted(r.job_id for r in archive.find(RecordFilter(text=text), limit=100))


def test_search_terms_are_words_and_quoted_phrases() -> None:
    assert search_terms('  quota "exceeded on rg-7"  quota  "" x') == ["quota", "exceeded on rg-7", "x"]


def test_a_search_finds_a_record_by_a_substring_of_its_job_id(archive: DeadLetterArchive) -> None:
    archive.store([_dead_letter("job-123456"), _dead_letter("job-654321")])
    assert _found(archive, "23456") == ["job-123456"]


def test_a_search_finds_a_record_by_its_message_id(archive: DeadLetterArchive) -> None:
    record = _dead_letter("job-1")
    archive.store([record, _dead_letter("job-2")])
    assert record.message_id is not None
    assert _found(archive, record.message_id[-12:]) == ["job-1"]


def test_a_search_finds_a_record_by_a_value_in_its_request(archive: DeadLetterArchive) -> None:
    archive.store([_dead_letter("job-1", request={"location": "westeurope"}), _dead_letter("job-2")])
    assert _found(archive, "westeurope") == ["job-1"]


def test_a_search_finds_records_by_provider_and_operation(archive: DeadLetterArchive) -> None:
    archive.store(
        [
            _dead_letter("job-1", namespace="ITL.Net", resource_type="VirtualNetwork", operation="delete"),
            _dead_letter("job-2", namespace="ITL.Net", resource_type="VirtualNetwork", operation="create"),
            _dead_letter("job-3"),
        ]
    )
    assert _found(archive, "ITL.Net/VirtualNetwork delete") == ["job-1"]


def test_a_search_finds_a_record_by_its_error_in_any_case(archive: DeadLetterArchive) -> None:
    archive.store([_dead_letter("job-1", error="Quota exceeded on rg-1"), _dead_letter("job-2")])
    assert _found(archive, "QUOTA") == ["job-1"]


def test_every_word_of_a_search_must_occur(archive: DeadLetterArchive) -> None:
    archive.store(
        [
            _dead_letter("job-1", error="Quota exceeded on rg-7"),
            _dead_letter("job-2", error="Quota exceeded on rg-8"),
        ]
    )
    assert _found(archive, "quota rg-7") == ["job-1"]


def test_a_quoted_phrase_must_occur_as_written(archive: DeadLetterArchive) -> None:
    archive.store(
        [
            _dead_letter("job-1", error="Quota exceeded on rg-7"),
            _dead_letter("job-2", error="Exceeded the quota on rg-7"),
        ]
    )
    assert _found(archive, '"quota exceeded"') == ["job-1"]


def test_a_search_shorter_than_a_trigram_still_matches(archive: DeadLetterArchive) -> None:
    archive.store([_dead_letter("job-1", error="No Q7 here"), _dead_letter("job-2")])
    assert _found(archive, "q7") == ["job-1"]


def test_percent_and_underscore_in_a_search_are_matched_literally(archive: DeadLetterArchive) -> None:
    archive.store(
        [_dead_letter("job-1", error="disk 100% full"), _dead_letter("job-2", error="disk 1000 full")]
    )
    assert _found(archive, "100%") == ["job-1"]
    assert _found(archive, "_") == []


def test_a_value_under_a_secret_key_is_never_found(archive: DeadLetterArchive) -> None:
    archive.store([_dead_letter("job-1", request={"name": "rg-1", "password": "hunter2hunter2"})])
    assert _found(archive, "hunter2hunter2") == []
    assert _found(archive, "rg-1") == ["job-1"]


def test_a_secret_inside_an_error_text_is_never_found(archive: DeadLetterArchive) -> None:
    archive.store([_dead_letter("job-1", error="rejected: token=abcdef123456 for amqp://u:pa55word@host")])
    assert _found(archive, "abcdef123456") == []
    assert _found(archive, "pa55word") == []
    assert _found(archive, "rejected") == ["job-1"]


def test_the_configured_redact_keys_are_masked_before_indexing(archive_url: str) -> None:
    archive = DeadLetterArchive(archive_url, redact_keys=["tenant_code"])
    try:
        archive.store([_dead_letter("job-1", request={"tenantCode": "acme-secret-42", "name": "rg-1"})])
        assert _found(archive, "acme-secret-42") == []
        assert _found(archive, "rg-1") == ["job-1"]
    finally:
        archive.close()


def test_a_search_combines_with_the_other_filters(archive: DeadLetterArchive) -> None:
    archive.store([_dead_letter("job-1", operation="delete"), _dead_letter("job-2", operation="create")])
    found = archive.find(RecordFilter(text="job-", operation="delete"))
    assert [r.job_id for r in found] == ["job-1"]
    assert archive.count(RecordFilter(text="job-")) == 2


def test_a_purged_record_is_no_longer_found(archive: DeadLetterArchive) -> None:
    archive.store([_dead_letter("job-1"), _dead_letter("job-2")])
    [first, _] = archive.ids(RecordFilter())
    archive.purge(RecordFilter(ids=[first]), who="test", reason="cleanup")
    assert _found(archive, "job-") == ["job-2"]


def test_records_written_without_a_search_document_are_indexed_when_the_archive_is_opened(
    archive_url: str,
) -> None:
    archive = DeadLetterArchive(archive_url)
    archive.store([_dead_letter("job-1"), _dead_letter("job-2")])
    with archive._engine_ready().begin() as conn:
        # As an archiver of an earlier version writes them, beside an upgraded archive.
        conn.execute(
            archive.records.update().where(archive.records.c.job_id == "job-2").values(search_text=None)
        )
    archive.close()
    assert _found(archive, "job-") == ["job-1", "job-2"]
    archive.close()


def test_sqlite_answers_a_search_from_its_trigram_index(tmp_path: Path) -> None:
    archive = DeadLetterArchive(f"sqlite:///{tmp_path}/archive.sqlite3")
    archive.store([_dead_letter("job-1")])
    query = sa.select(archive.records.c.id).where(*RecordFilter(text="job-1").clauses(archive.records))
    with archive._engine_ready().connect() as conn:
        plan = " ".join(
            str(row[-1]) for row in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {_sql(archive, query)}"))
        )
    archive.close()
    assert "VIRTUAL TABLE INDEX" in plan and "dead_letters_search" in plan


def test_postgresql_answers_a_search_from_its_trigram_index(archive: DeadLetterArchive) -> None:
    if archive.is_sqlite:
        pytest.skip("the PostgreSQL index")
    archive.store([_dead_letter(f"job-{i}") for i in range(50)])
    query = sa.select(archive.records.c.id).where(*RecordFilter(text="job-17").clauses(archive.records))
    with archive._engine_ready().connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = off")
        plan = " ".join(str(row[0]) for row in conn.execute(sa.text(f"EXPLAIN {_sql(archive, query)}")))
    assert "ix_dead_letters_search" in plan


def _sql(archive: DeadLetterArchive, query: sa.Select[Any]) -> str:
    dialect = archive._engine_ready().dialect
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


@pytest.fixture
def cli_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeadLetterArchive]:
    url = f"sqlite:///{tmp_path}/archive.sqlite3"
    monkeypatch.setenv("PROVIDER_JOBS_ARCHIVE_URL", url)
    monkeypatch.setenv("PROVIDER_JOBS_LOG_FORMAT", "json")
    monkeypatch.setenv("PROVIDER_JOBS_LOG_LEVEL", "WARNING")
    archive = DeadLetterArchive(url)
    yield archive
    archive.close()
    logging.getLogger().handlers.clear()


def test_dlq_list_search_takes_the_same_syntax(cli_archive: DeadLetterArchive) -> None:
    cli_archive.store(
        [
            _dead_letter("job-1", error="Quota exceeded on rg-7"),
            _dead_letter("job-2", error="Quota exceeded on rg-8"),
        ]
    )
    result = CliRunner().invoke(dlq_app, ["list", "--search", '"quota exceeded" rg-7', "--json"])
    assert result.exit_code == 0, result.output
    assert [r["job_id"] for r in json.loads(result.stdout)["records"]] == ["job-1"]


def test_the_api_search_takes_the_same_syntax(archive: DeadLetterArchive) -> None:
    archive.store(
        [
            _dead_letter("job-1", error="Quota exceeded on rg-7"),
            _dead_letter("job-2", error="Quota exceeded on rg-8"),
        ]
    )
    settings = Settings.from_env().replace(archive_url="sqlite:///unused")
    with TestClient(create_app(settings, archive=archive)) as client:
        answer = client.get("/dlq/records", params={"search": '"quota exceeded" rg-7'})
    assert answer.status_code == 200, answer.text
    assert [r["job_id"] for r in answer.json()["records"]] == ["job-1"]


def test_a_page_of_a_word_matching_many_records_walks_the_page_order_and_finds_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = DeadLetterArchive(f"sqlite:///{tmp_path}/archive.sqlite3")
    try:
        archive.store(
            [_dead_letter(f"job-{i}", error="Quota exceeded") for i in range(6)] + [_dead_letter("x")]
        )
        looked_up = [r.id for r in archive.find(RecordFilter(text="quota"), limit=4)]
        monkeypatch.setattr(search, "PAGE_LOOKUP_UP_TO", 2)
        walked = [r.id for r in archive.find(RecordFilter(text="quota"), limit=4)]
        assert walked == looked_up and len(walked) == 4
    finally:
        archive.close()


def test_a_url_password_cut_by_the_documents_length_cap_is_never_indexed() -> None:
    documents = SearchDocuments(Redactor())
    for pad in range(7_900, 8_192):
        document = documents(_dead_letter("job-1", error="x" * pad + " amqp://u:hunter2secret@host"))
        assert "hunt" not in document, pad
