from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dlq_support import dramatiq_body
from typer.testing import CliRunner

from provider_jobs.dlq import DeadLetterArchive, dead_letter_from_delivery
from provider_jobs.dlq.cli.app import dlq_app
from provider_jobs.dlq.operations import Operations
from provider_jobs.settings import Settings

from support import declare_work_queue, queue_depth

runner = CliRunner()


@pytest.fixture
def env(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DeadLetterArchive]:
    url = f"sqlite:///{tmp_path}/archive.sqlite3"
    for name, value in {
        "ARCHIVE_URL": url,
        "BROKER_URL": settings.broker_url,
        "QUEUE_NAME": settings.queue_name,
        "OPERATOR": "carol",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(f"PROVIDER_JOBS_{name}", value)
    archive = DeadLetterArchive(url)
    records = []
    for i, (category, error) in enumerate(
        [("provider_not_found", "No provider found for ITL.Core/ResourceGroup")] * 3
        + [("validation", "Validation error: missing required field 'name'")]
    ):
        body = dramatiq_body(
            settings.queue_name,
            job_id=f"job-{i}",
            options={
                "dead_letter": {
                    "reason": "exhausted",
                    "category": category,
                    "error": error,
                    "attempts": 3,
                    "dead_lettered_at_ms": 1_800_000_000_000 + i,
                }
            },
        )
        records.append(dead_letter_from_delivery(body, {}, source_queue=f"{settings.queue_name}.XQ"))
    archive.store(records)
    yield archive
    archive.close()
    logging.getLogger().handlers.clear()


def _json(args: list[str], code: int = 0) -> Any:
    result = runner.invoke(dlq_app, [*args, "--json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_list_groups_and_show_answer_in_json(env: DeadLetterArchive) -> None:
    listed = _json(["list", "--category", "provider_not_found", "--limit", "2"])
    assert listed["total"] == 3 and [r["job_id"] for r in listed["records"]] == ["job-2", "job-1"]
    groups = _json(["groups"])
    assert [(g["count"], g["category"]) for g in groups] == [(3, "provider_not_found"), (1, "validation")]
    shown = _json(["show", "4"])
    assert shown["error"] == "Validation error: missing required field 'name'" and shown["body"].startswith(
        "{"
    )


def test_tables_are_printed_for_people(env: DeadLetterArchive) -> None:
    result = runner.invoke(dlq_app, ["groups"])
    assert result.exit_code == 0
    assert "provider_not_found" in result.stdout and "No provider found" in result.stdout


def test_an_unknown_id_or_an_empty_result_exits_1(env: DeadLetterArchive) -> None:
    result = runner.invoke(dlq_app, ["show", "99"])
    assert result.exit_code == 1 and "No archived dead letter with id 99" in result.stderr
    assert runner.invoke(dlq_app, ["list", "--category", "nothing"]).exit_code == 1


def test_an_invalid_edit_exits_2_and_sends_nothing(
    env: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    declare_work_queue(amqp, settings.queue_name)
    for edit in (["--edit", "{not json"], ["--edit", "[1, 2]"], ["--edit-job", '{"priority": "high"}']):
        result = runner.invoke(dlq_app, ["replay", "1", "2", *edit])
        assert result.exit_code == 2, result.output
        assert "nothing was sent" in result.stderr
    assert queue_depth(amqp, settings.queue_name) == 0
    assert env.audit() == []


def test_replay_a_group_then_discard_with_a_reason_and_read_the_audit(
    env: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    declare_work_queue(amqp, settings.queue_name)
    group = _json(["groups"])[0]["fingerprint"]
    replayed = _json(["replay", "--group", group, "--reason", "provider deployed"])
    assert [o["status"] for o in replayed["outcomes"]] == ["published"] * 3
    assert queue_depth(amqp, settings.queue_name) == 3
    assert _json(["replay", "1"], code=1)["outcomes"][0]["status"] == "skipped"  # replayed already
    assert runner.invoke(dlq_app, ["discard", "4"]).exit_code == 2  # a reason is required
    assert _json(["discard", "4", "--reason", "bad input"]) == {"discarded": [4]}
    audit = _json(["audit"])
    assert [(e["who"], e["action"], e["record_id"]) for e in audit][:2] == [
        ("carol", "discard", 4),
        ("carol", "replay", 3),
    ]
    assert _json(["purge", "--yes"]) == {"deleted": 1}


def test_an_unreachable_archive_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_JOBS_ARCHIVE_URL", "postgresql+psycopg://postgres@127.0.0.1:9/none")
    monkeypatch.setenv("PROVIDER_JOBS_LOG_FORMAT", "json")
    result = runner.invoke(dlq_app, ["list"])
    logging.getLogger().handlers.clear()
    assert result.exit_code == 3 and "unavailable" in result.stderr


def test_discard_all_needs_the_flag_as_replay_all_does(env: DeadLetterArchive) -> None:
    refused = runner.invoke(dlq_app, ["discard", "--reason", "outage over"])
    assert refused.exit_code == 2 and "--all" in refused.output
    assert env.count() == 4 and env.audit() == []
    assert _json(["discard", "--all", "--reason", "outage over"]) == {"discarded": [1, 2, 3, 4]}
    # Only dead letters awaiting action: nothing is left to discard.
    assert _json(["discard", "--all", "--reason", "again"], code=1) == {"discarded": []}


def test_replays_and_discards_are_operations_listed_shown_and_steered(
    env: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    declare_work_queue(amqp, settings.queue_name)
    group = _json(["groups"])[0]["fingerprint"]
    replayed = _json(["replay", "--group", group, "--reason", "provider deployed"])
    assert [o["status"] for o in replayed["outcomes"]] == ["published"] * 3
    assert _json(["discard", "--all", "--reason", "outage over"]) == {"discarded": [4]}
    listed = _json(["operations", "list"])
    assert [(o["id"], o["action"], o["state"], o["who"]) for o in listed] == [
        (2, "discard", "done", "carol"),
        (replayed["operation"], "replay", "done", "carol"),
    ]
    shown = _json(["operations", "show", str(replayed["operation"])])
    assert (shown["total"], shown["counts"], shown["records"]) == (3, {"sent": 3}, [])
    assert shown["selection"] == {"statuses": ["dead"], "fingerprint": group}
    assert queue_depth(amqp, settings.queue_name) == 3
    refused = runner.invoke(dlq_app, ["operations", "pause", "1"])
    assert refused.exit_code == 2 and "Operation 1 is done: it cannot be paused" in refused.stderr
    refused = runner.invoke(dlq_app, ["operations", "resume", "1"])
    assert refused.exit_code == 2 and "Operation 1 is done: it cannot be resumed" in refused.stderr
    assert runner.invoke(dlq_app, ["operations", "show", "9"]).exit_code == 1


def test_an_operations_uncertain_records_are_resolved_from_the_cli(
    env: DeadLetterArchive, settings: Settings, amqp: Any
) -> None:
    declare_work_queue(amqp, settings.queue_name)
    ops = Operations(env, broker_url=settings.broker_url)
    op_id = ops.start_replay([1, 2], who="carol", selection={"ids": 2})
    # Its process died holding claims on both records: they may have been published.
    env.begin_sending(op_id, [0, 1])
    env.claim_many([1, 2])
    env.set_operation_state(op_id, "failed", error="killed")
    resumed = runner.invoke(dlq_app, ["operations", "resume", str(op_id), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert f"resolve {op_id} --sent|--not-sent" in resumed.stderr
    replay = _json(["replay", "1", "2", "--force"], code=1)
    assert [o["status"] for o in replay["outcomes"]] == ["skipped", "skipped"]
    refused = runner.invoke(dlq_app, ["operations", "resolve", str(op_id)])
    assert refused.exit_code == 2 and "--sent or --not-sent" in refused.output
    resolved = _json(["operations", "resolve", str(op_id), "--sent", "--id", "1", "--reason", "it ran"])
    assert resolved["resolved"] == [1] and resolved["operation"]["counts"] == {"sent": 1, "uncertain": 1}
    resolved = _json(["operations", "resolve", str(op_id), "--not-sent"])
    assert resolved["resolved"] == [2] and resolved["operation"]["counts"] == {"sent": 1, "skipped": 1}
    assert _json(["operations", "resolve", str(op_id), "--not-sent"], code=1)["resolved"] == []
    assert [env.get(1).status, env.get(2).status] == ["replayed", "dead"]
    assert queue_depth(amqp, settings.queue_name) == 0
