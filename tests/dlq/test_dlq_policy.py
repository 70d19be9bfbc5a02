from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from dlq_support import dramatiq_body

from provider_jobs.dlq import (
    DEFAULT_POLICY,
    DeadLetterArchive,
    DlqPolicy,
    Replayer,
    dead_letter_from_delivery,
    process_dlq,
)
from provider_jobs.errors import PolicyError
from provider_jobs.settings import Settings

from support import declare_work_queue


def _store(
    archive: DeadLetterArchive,
    settings: Settings,
    category: str,
    error: str,
    *,
    age_s: float = 0,
    **job_fields: Any,
) -> int:
    dead_ms = int((time.time() - age_s) * 1000)
    body = dramatiq_body(
        settings.queue_name,
        options={
            "dead_letter": {
                "reason": "exhausted",
                "category": category,
                "error": error,
                "attempts": 3,
                "dead_lettered_at_ms": dead_ms,
            }
        },
        **job_fields,
    )
    archive.store([dead_letter_from_delivery(body, {}, source_queue="x.XQ")])
    return max(r.id for r in archive.find(limit=1000) if r.id is not None)


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_default_policy_replays_discards_and_escalates(
    settings: Settings, amqp: Any, archive: DeadLetterArchive, caplog: pytest.LogCaptureFixture
) -> None:
    declare_work_queue(amqp, settings.queue_name)
    back = _store(archive, settings, "provider_not_found", "No provider found for ITL.Core/ResourceGroup")
    missing = _store(
        archive,
        settings,
        "provider_not_found",
        "No provider found for ITL.Gone/Thing",
        namespace="ITL.Gone",
        resource_type="Thing",
    )
    waited = _store(
        archive,
        settings,
        "provider_not_found",
        "No provider found for ITL.Old/Thing",
        namespace="ITL.Old",
        resource_type="Thing",
        age_s=7200,
    )
    invalid = _store(archive, settings, "validation", "Validation error: missing required field 'name'")
    odd = _store(archive, settings, "unknown", "KeyError: 'x'")
    replayer = Replayer(archive=archive, broker_url=settings.broker_url, who="triage")

    plan = process_dlq(archive, replayer=replayer, providers={"ITL.Core/ResourceGroup"}, dry_run=True)
    actions = {d.record_id: d.action for d in plan.decisions}
    assert actions == {back: "replay", missing: "wait", waited: "replay", invalid: "discard", odd: "escalate"}
    assert {archive.get(i).status for i in actions} == {"dead"}  # a dry run changes nothing

    report = process_dlq(archive, replayer=replayer, providers={"ITL.Core/ResourceGroup"})
    assert report.replay is not None and report.replay.published == 2
    assert [archive.get(i).status for i in (back, missing, waited, invalid, odd)] == [
        "replayed",
        "dead",
        "replayed",
        "discarded",
        "dead",
    ]
    assert any(r.levelname == "WARNING" and "Discarding" in r.getMessage() for r in caplog.records)
    assert any(r.levelname == "ERROR" and "Escalating" in r.getMessage() for r in caplog.records)
    again = process_dlq(archive, replayer=replayer, providers=set())
    assert {d.record_id: d.action for d in again.decisions}[odd] == "keep"  # escalated once


def test_a_policy_file_drives_triage_and_posts_escalations_to_a_webhook(
    settings: Settings, archive: DeadLetterArchive, tmp_path: Path
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(f"""
[[rules]]
name = "timeouts-stay"
category = "timeout"
action = "keep"

[[rules]]
name = "page-someone"
action = "escalate"
webhook_url = "http://127.0.0.1:{server.server_port}/hook"
""")
    kept = _store(archive, settings, "timeout", "Timed out")
    paged = _store(archive, settings, "forbidden", "Forbidden for ITL.Core")
    _Hook.received.clear()
    try:
        report = process_dlq(archive, policy=DlqPolicy.load(policy_file))
    finally:
        server.shutdown()
        server.server_close()
    assert {d.record_id: (d.rule, d.action) for d in report.decisions} == {
        kept: ("timeouts-stay", "keep"),
        paged: ("page-someone", "escalate"),
    }
    assert [[r["id"] for r in hook["escalated"]] for hook in _Hook.received] == [[paged]]
    assert archive.get(paged).escalated_ms is not None


def test_a_bad_policy_file_fails_with_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"rules": [{"category": "x", "action": "explode"}]}))
    with pytest.raises(PolicyError, match=r"action='explode' is not allowed"):
        DlqPolicy.load(path)
    path.write_text(json.dumps({"rules": [{"action": "keep", "colour": "red"}]}))
    with pytest.raises(PolicyError, match="unknown key"):
        DlqPolicy.load(path)
    assert DEFAULT_POLICY.rules[-1].action == "escalate"


def test_an_escalation_webhook_is_sent_the_records_with_their_secrets_masked(
    settings: Settings, archive: DeadLetterArchive
) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    policy = DlqPolicy.from_dict(
        {"rules": [{"action": "escalate", "webhook_url": f"http://127.0.0.1:{server.server_port}/hook"}]}
    )
    paged = _store(
        archive,
        settings,
        "forbidden",
        "Forbidden: postgresql://app:url-pw@db/app said token=tb-1",
        request={"name": "rg-1", "client_secret": "cs-1"},
    )
    _Hook.received.clear()
    try:
        process_dlq(archive, policy=policy)
    finally:
        server.shutdown()
        server.server_close()

    [hook] = _Hook.received
    [record] = hook["escalated"]
    assert record["id"] == paged and record["request"] == {"name": "rg-1", "client_secret": "***"}
    assert record["error"] == "Forbidden: postgresql://app:***@db/app said token=***"
    assert record["provider"] == "ITL.Core/ResourceGroup"
