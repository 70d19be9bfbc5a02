"""What ``provider-jobs dlq`` shows of stored data, and the text and ids it refuses:
masked secrets, capped depth, stored text never read as markup, ids counted once."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dlq_support import dramatiq_body
from typer.testing import CliRunner

from provider_jobs.dlq import DeadLetterArchive, Replayer, dead_letter_from_delivery
from provider_jobs.errors import InvalidJob
from provider_jobs.settings import Settings

from support import queue_depth, wait_for

runner = CliRunner()

SECRET_REQUEST = {"name": "rg-1", "password": "hunter2-pw", "auth": {"ApiKey": "key-value"}}


def store(archive: DeadLetterArchive, settings: Settings, *, error: str = "boom", **job_fields: Any) -> int:
    """Archive one dead letter; its id."""
    body = dramatiq_body(
        settings.queue_name,
        options={
            "dead_letter": {
                "reason": "non_retryable",
                "category": "validation",
                "error": error,
                "attempts": 1,
                "dead_lettered_at_ms": 1_800_000_000_000,
            }
        },
        **job_fields,
    )
    archive.store([dead_letter_from_delivery(body, {}, source_queue=f"{settings.queue_name}.XQ")])
    return max(r.id for r in archive.find(limit=1) if r.id is not None)


@pytest.fixture
def cli_archive(
    settings: Settings, archive_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DeadLetterArchive]:
    """The CLI's environment on ``archive_url`` (SQLite and PostgreSQL)."""
    for name, value in {
        "ARCHIVE_URL": archive_url,
        "BROKER_URL": settings.broker_url,
        "QUEUE_NAME": settings.queue_name,
        "OPERATOR": "carol",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(f"PROVIDER_JOBS_{name}", value)
    archive = DeadLetterArchive(archive_url)
    yield archive
    archive.close()
    logging.getLogger().handlers.clear()


def dlq(*args: str) -> Any:
    from provider_jobs.dlq.cli.app import dlq_app

    return runner.invoke(dlq_app, list(args))


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        value = {"a": value}
    return value


# -- 4: deep records ------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [600, 950])
def test_a_deeply_nested_record_is_listed_and_shown_capped(
    cli_archive: DeadLetterArchive, settings: Settings, depth: int
) -> None:
    record_id = store(cli_archive, settings, request=nested(depth))

    listed = dlq("list", "--json")
    shown = dlq("show", str(record_id), "--json")
    table = dlq("show", str(record_id))

    assert listed.exit_code == 0 and shown.exit_code == 0 and table.exit_code == 0, shown.output
    assert json.loads(listed.stdout)["records"][0]["id"] == record_id
    assert "nested deeper than 32 levels: not shown" in json.dumps(json.loads(shown.stdout)["request"])


# -- 12: markup in stored text ----------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["groups"], ["show", "{id}"], ["audit"]])
def test_stored_text_is_never_read_as_markup(
    cli_archive: DeadLetterArchive, settings: Settings, command: list[str]
) -> None:
    record_id = store(cli_archive, settings, error="bad [/bogus] and [bold]x[/bold] [link=file:///x]y")
    cli_archive.write_audit(who="[/who]", action="discard", record_id=record_id, reason="[/reason]")

    result = dlq(*(part.format(id=record_id) for part in command))

    assert result.exit_code == 0, result.output
    assert "[/bogus]" in result.stdout or "[/who]" in result.stdout


# -- secrets -----------------------------------------------------------------------------------


def test_show_and_list_mask_secrets(cli_archive: DeadLetterArchive, settings: Settings) -> None:
    record_id = store(
        cli_archive, settings, request=SECRET_REQUEST, error="login to amqp://u:url-pw@h failed: token=tb-1"
    )

    outputs = [
        dlq("show", str(record_id)),
        dlq("show", str(record_id), "--json"),
        dlq("list"),
        dlq("list", "--json"),
    ]

    for result in outputs:
        assert result.exit_code == 0, result.output
        for secret in ("hunter2-pw", "key-value", "url-pw", "tb-1"):
            assert secret not in result.stdout, (secret, result.stdout)
    assert json.loads(outputs[1].stdout)["request"] == {
        "name": "rg-1",
        "password": "***",
        "auth": {"ApiKey": "***"},
    }


def test_show_reveal_shows_secrets_and_writes_the_audit_log(
    cli_archive: DeadLetterArchive, settings: Settings
) -> None:
    record_id = store(cli_archive, settings, request=SECRET_REQUEST)

    result = dlq("show", str(record_id), "--json", "--reveal")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["request"]["password"] == "hunter2-pw"
    assert [(e.who, e.action, e.record_id) for e in cli_archive.audit()] == [("carol", "reveal", record_id)]


# -- 8, 9, 11: replays ----------------------------------------------------------------------


def test_an_id_named_three_times_is_replayed_once(
    cli_archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    record_id = store(cli_archive, settings)
    amqp.queue_declare(settings.queue_name, durable=True, arguments={"x-max-priority": 9})

    result = dlq("replay", str(record_id), str(record_id), str(record_id), "--json")

    assert result.exit_code == 0, result.output
    assert [o["status"] for o in json.loads(result.stdout)["outcomes"]] == ["published"]
    wait_for(lambda: queue_depth(amqp, settings.queue_name) >= 1, timeout_s=5)
    assert queue_depth(amqp, settings.queue_name) == 1
    assert [e.action for e in cli_archive.audit()] == ["replay"]


@pytest.mark.parametrize("dry_run", [False, True])
def test_an_edit_that_changes_the_operation_is_refused_up_front(
    cli_archive: DeadLetterArchive, settings: Settings, dry_run: bool
) -> None:
    record_id = store(cli_archive, settings, operation="create")

    result = dlq(
        "replay", str(record_id), "--edit-job", '{"operation": "delete"}', *(["--dry-run"] if dry_run else [])
    )

    assert result.exit_code == 2
    assert "cannot change the operation from 'create' to 'delete'" in result.stderr
    assert cli_archive.get(record_id).status == "dead"


def test_an_edit_may_rename_a_provider_action(cli_archive: DeadLetterArchive, settings: Settings) -> None:
    record_id = store(cli_archive, settings, operation="restrat")

    result = dlq("replay", str(record_id), "--edit-job", '{"operation": "restart"}', "--dry-run", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["outcomes"][0]["status"] == "would_publish"


@pytest.mark.parametrize("option", ["--search", "--category", "--provider", "--group"])
def test_a_nul_in_a_filter_is_refused(
    cli_archive: DeadLetterArchive, settings: Settings, option: str
) -> None:
    store(cli_archive, settings)

    result = dlq("list", option, "a\x00b")

    assert result.exit_code == 2
    assert "NUL" in result.stderr


def test_a_replay_reason_with_a_nul_publishes_nothing(
    cli_archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    record_id = store(cli_archive, settings)
    replayer = Replayer(archive=cli_archive, broker_url=settings.broker_url, who="carol")

    with pytest.raises(InvalidJob, match="NUL"):
        replayer.replay([record_id], reason="fixed\x00")

    assert cli_archive.get(record_id).status == "dead" and cli_archive.audit() == []
    assert dlq("replay", str(record_id), "--reason", "a\x00").exit_code == 2


def test_an_edit_holding_a_nul_is_published_marked_and_audited_together(
    cli_archive: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    record_id = store(cli_archive, settings)
    amqp.queue_declare(settings.queue_name, durable=True, arguments={"x-max-priority": 9})
    replayer = Replayer(archive=cli_archive, broker_url=settings.broker_url, who="carol")

    report = replayer.replay([record_id], request_patch={"note": "a\x00b"}, reason="fixed")

    assert report.published == 1
    assert cli_archive.get(record_id).status == "replayed"
    assert [e.action for e in cli_archive.audit()] == ["replay_edited"]


# -- file modes -------------------------------------------------------------------------------


def test_the_sqlite_archive_and_its_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new-dir" / "archive.sqlite3"
    archive = DeadLetterArchive(f"sqlite:///{path}")
    try:
        archive.check()
    finally:
        archive.close()

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
