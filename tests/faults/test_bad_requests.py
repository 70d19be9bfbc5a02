"""A corpus of bad input at the edges: API requests, CLI arguments and settings.

Each case names its class (sizes, encodings, types, numbers at their limits,
unicode, NUL, markup, SQL-looking text, duplicates...) and asserts its
documented outcome: a 4xx with a message for the API; for the CLI and the
settings, one line on stderr and the documented exit code (README, "Bad input").
No broker is needed: the API cases read, refuse, or replay as a dry run.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi.testclient import TestClient

from provider_jobs.api import create_app
from provider_jobs.cli import main
from provider_jobs.dlq import DeadLetterArchive, dead_letter_from_delivery
from provider_jobs.settings import Settings

TOKEN = "corpus-token"
READ_TOKEN = "corpus-reader"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


def _store(archive: DeadLetterArchive, queue_name: str) -> int:
    body = json.dumps(
        {
            "queue_name": queue_name,
            "actor_name": "create_resource",
            "args": [],
            "kwargs": {
                "job": {
                    "job_id": uuid.uuid4().hex,
                    "provider_namespace": "ITL.Core",
                    "resource_type": "ResourceGroup",
                    "operation": "create",
                    "request": {"name": "rg-1", "password": "corpus-pw"},
                    "priority": 5,
                }
            },
            "options": {
                "dead_letter": {
                    "reason": "non_retryable",
                    "category": "validation",
                    "error": "Validation error: [/bogus] password=corpus-pw",
                    "attempts": 1,
                    "dead_lettered_at_ms": int(time.time() * 1000),
                }
            },
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
    ).encode()
    archive.store([dead_letter_from_delivery(body, {}, source_queue=f"{queue_name}.XQ")])
    return max(r.id for r in archive.find(limit=1) if r.id is not None)


@pytest.fixture
def archive_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/archive.sqlite3"


@pytest.fixture
def record_id(archive_url: str) -> Iterator[int]:
    archive = DeadLetterArchive(archive_url)
    try:
        yield _store(archive, "corpus.jobs")
    finally:
        archive.close()


# -- the API ------------------------------------------------------------------------------------


class ApiCase(NamedTuple):
    kind: str
    method: str
    path: str
    request: dict[str, Any]
    status: int
    says: str


_ID = "{id}"
API_CASES = [
    ApiCase("size: body over the cap", "POST", "/dlq/replay",
            {"content": b"[" + b"1," * 600_000 + b"1]", "headers": JSON}, 413, "larger than 1048576 bytes"),
    ApiCase("size: too many ids", "POST", "/dlq/replay",
            {"json": {"ids": list(range(1, 10_002))}, "headers": AUTH}, 422, "at most 10000 items"),
    ApiCase("size: reason too long", "POST", "/dlq/replay",
            {"json": {"ids": [1], "reason": "x" * 1001}, "headers": AUTH}, 422, "at most 1000 characters"),
    ApiCase("size: filter too long", "GET", "/dlq/records?search=" + "x" * 1001,
            {"headers": AUTH}, 422, "at most 1000 characters"),
    ApiCase("encoding: body not UTF-8", "POST", "/dlq/replay",
            {"content": b'{"ids": [1], "reason": "\xff\xfe"}', "headers": JSON},
            400, "error parsing the body"),
    ApiCase("encoding: body not JSON", "POST", "/dlq/replay",
            {"content": b"ids=1", "headers": JSON}, 422, "JSON decode error"),
    ApiCase("encoding: Content-Length not a number", "POST", "/dlq/replay",
            {"content": b"{}", "headers": {**JSON, "Content-Length": "lots"}}, 400, "Content-Length"),
    ApiCase("types: JSON array for an object", "POST", "/dlq/replay",
            {"json": [1, 2], "headers": AUTH}, 422, "valid dictionary"),
    ApiCase("types: boolean id", "POST", "/dlq/replay",
            {"json": {"ids": [True]}, "headers": AUTH}, 422, "valid integer"),
    ApiCase("types: string id", "POST", "/dlq/replay",
            {"json": {"ids": ["1"]}, "headers": AUTH}, 422, "valid integer"),
    ApiCase("types: string for a boolean", "POST", "/dlq/replay",
            {"json": {"ids": [1], "force": "yes"}, "headers": AUTH}, 422, "valid boolean"),
    ApiCase("types: patch not an object", "POST", "/dlq/replay",
            {"json": {"ids": [1], "request_patch": [1]}, "headers": AUTH}, 422, "valid dictionary"),
    ApiCase("types: unknown field", "POST", "/dlq/discard",
            {"json": {"ids": [1], "reason": "x", "colour": "red"}, "headers": AUTH}, 422, "Extra inputs"),
    ApiCase("types: unknown status", "GET", "/dlq/records?status=zombie",
            {"headers": AUTH}, 422, "Input should be"),
    ApiCase("numbers: id 0", "GET", "/dlq/records/0", {"headers": AUTH}, 422, "greater than or equal to 1"),
    ApiCase("numbers: id 2**53 + 1", "POST", "/dlq/replay",
            {"json": {"ids": [2**53 + 1]}, "headers": AUTH}, 422, "less than or equal to 9007199254740992"),
    ApiCase("numbers: id 2**64 in the path", "GET", f"/dlq/records/{2**64}",
            {"headers": AUTH}, 422, "less than or equal to 9007199254740992"),
    ApiCase("numbers: fractional id", "POST", "/dlq/replay",
            {"json": {"ids": [1.5]}, "headers": AUTH}, 422, "valid integer"),
    ApiCase("numbers: limit 10**30", "GET", f"/dlq/records?limit={10**30}",
            {"headers": AUTH}, 422, "less than or equal to 1000"),
    ApiCase("numbers: negative offset", "GET", "/dlq/records?offset=-1",
            {"headers": AUTH}, 422, "greater than or equal to 0"),
    ApiCase("NUL: in a filter", "GET", "/dlq/records?search=a%00b", {"headers": AUTH}, 422, "NUL"),
    ApiCase("NUL: in a replay reason", "POST", "/dlq/replay",
            {"json": {"ids": [1], "reason": "a\x00b"}, "headers": AUTH}, 422, "NUL"),
    ApiCase("unicode: lone surrogate in a reason", "POST", "/dlq/replay",
            {"content": b'{"ids": [1], "reason": "\\ud800"}', "headers": JSON}, 422, "valid string"),
    ApiCase("unicode: right-to-left and emoji in a filter", "GET",
            "/dlq/records?search=%E2%80%AE%F0%9F%92%A5", {"headers": AUTH}, 200, '"total":0'),
    ApiCase("SQL-looking text in a filter", "GET", "/dlq/records?search=%27%20OR%201%3D1%20--",
            {"headers": AUTH}, 200, '"total":0'),
    ApiCase("SQL-looking text as a group", "POST", "/dlq/replay",
            {"json": {"group": "x' OR '1'='1", "dry_run": True}, "headers": AUTH}, 200, '"outcomes":[]'),
    ApiCase("duplicates: one id three times", "POST", "/dlq/replay",
            {"json": {"ids": [_ID, _ID, _ID], "dry_run": True}, "headers": AUTH}, 200, '"would_publish"'),
    ApiCase("nothing selected", "POST", "/dlq/replay", {"json": {}, "headers": AUTH}, 422,
            "name ids, a group or a category"),
    ApiCase("auth: no token on a read", "GET", "/dlq/records", {}, 401, "bearer token is required"),
    ApiCase("auth: no token on a mutation with a large body", "POST", "/dlq/replay",
            {"content": b" " * (4 << 20)}, 401, "bearer token is required"),
    ApiCase("auth: the read-only token on a mutation", "POST", "/dlq/discard",
            {"json": {"ids": [1], "reason": "x"}, "headers": {"Authorization": f"Bearer {READ_TOKEN}"}},
            403, "read-only"),
    ApiCase("auth: reveal with the read-only token", "GET", "/dlq/records/{id}?reveal=true",
            {"headers": {"Authorization": f"Bearer {READ_TOKEN}"}}, 403, "read-only"),
    ApiCase("secrets: a list page never shows a password", "GET", "/dlq/records",
            {"headers": AUTH}, 200, '"password":"***"'),
]  # fmt: skip


def _fill(value: Any, record_id: int) -> Any:
    if value == _ID:
        return record_id
    if isinstance(value, list):
        return [_fill(v, record_id) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, record_id) for k, v in value.items()}
    if isinstance(value, str):
        return value.replace(_ID, str(record_id))
    return value


@pytest.mark.parametrize("case", API_CASES, ids=[c.kind for c in API_CASES])
def test_a_bad_api_request_gets_its_documented_answer(
    archive_url: str, record_id: int, case: ApiCase
) -> None:
    settings = Settings(archive_url=archive_url, api_token=TOKEN, api_read_token=READ_TOKEN)
    archive = DeadLetterArchive(archive_url)
    try:
        with TestClient(create_app(settings, archive=archive)) as client:
            response = client.request(
                case.method, _fill(case.path, record_id), **_fill(case.request, record_id)
            )
    finally:
        archive.close()

    assert response.status_code == case.status, response.text
    compact = response.text.replace(": ", ":")
    assert case.says.replace(": ", ":") in compact, response.text
    assert "corpus-pw" not in response.text


# -- the CLI and the settings ---------------------------------------------------------------------


class CliCase(NamedTuple):
    kind: str
    args: list[str]
    env: dict[str, str]
    code: int
    says: str


CLI_CASES = [
    CliCase("types: a word for an id", ["dlq", "show", "abc"], {}, 2, "Invalid value for 'record_id'"),
    CliCase("numbers: an id beyond 64 bits", ["dlq", "show", "99999999999999999999"], {}, 2,
            "less than or equal to 9007199254740992"),
    CliCase("numbers: id 0", ["dlq", "show", "0"], {}, 2, "greater than or equal to 1"),
    CliCase("numbers: limit 0", ["dlq", "list", "--limit", "0"], {}, 2, "greater than or equal to 1"),
    CliCase("numbers: a huge page", ["dlq", "list", "--page", "1" + "0" * 30], {}, 2,
            "less than or equal to"),
    CliCase("numbers: a negative rate", ["dlq", "replay", "1", "--rate", "-1"], {}, 2, "'--rate'"),
    CliCase("numbers: an age older than the epoch",
            ["dlq", "list", "--since", "99999999999d", "--status", "all"], {}, 0, ""),
    CliCase("NUL: in a filter", ["dlq", "list", "--search", "a\x00b"], {}, 2, "must not contain a NUL"),
    CliCase("NUL: in a reason", ["dlq", "discard", "{id}", "--reason", "x\x00"], {}, 2,
            "must not contain a NUL"),
    CliCase("size: a filter of 2000 characters", ["dlq", "list", "--search", "x" * 2000], {}, 2,
            "longer than 1000 characters"),
    CliCase("encoding: an edit that is not JSON", ["dlq", "replay", "{id}", "--edit", "{bad"], {}, 2,
            "--edit is not JSON"),
    CliCase("types: an edit that is a list", ["dlq", "replay", "{id}", "--edit", "[1]"], {}, 2,
            "must be a JSON object"),
    CliCase("types: an edit that changes the actor", ["dlq", "replay", "{id}", "--edit-job",
            '{"operation": "delete"}', "--dry-run"], {}, 2, "cannot change the operation"),
    CliCase("types: a time that is no time", ["dlq", "list", "--since", "yesterday"], {}, 2,
            "neither an ISO time nor an age"),
    CliCase("types: an unknown status", ["dlq", "list", "--status", "zombie"], {}, 2,
            "expected dead, replayed, discarded, uncertain or all"),
    CliCase("blank reason", ["dlq", "discard", "{id}", "--reason", "   "], {}, 2, "say why"),
    CliCase("not found: an id not archived", ["dlq", "show", "424242"], {}, 1, "No archived dead letter"),
    CliCase("SQL-looking text in a filter", ["dlq", "list", "--search", "' OR 1=1 --"], {}, 1, ""),
    CliCase("markup in a filter", ["dlq", "list", "--category", "[/bogus]"], {}, 1, ""),
    CliCase("markup in stored text", ["dlq", "list"], {}, 0, ""),
    CliCase("duplicates: one id three times",
            ["dlq", "replay", "{id}", "{id}", "{id}", "--dry-run", "--json"], {}, 0, ""),
    CliCase("settings: retention nan", ["dlq", "list"], {"ARCHIVE_RETENTION_DAYS": "nan"}, 2,
            "ARCHIVE_RETENTION_DAYS='nan' is not allowed: expected a finite number"),
    CliCase("settings: retention inf", ["dlq", "list"], {"ARCHIVE_RETENTION_DAYS": "inf"}, 2,
            "expected a finite number"),
    CliCase("settings: retention 1e300", ["dlq", "list"], {"ARCHIVE_RETENTION_DAYS": "1e300"}, 2,
            "expected days > 0 and at most 36500"),
    CliCase("settings: a port that is a word", ["api"], {"API_PORT": "abc"}, 2,
            "PROVIDER_JOBS_API_PORT='abc' is not allowed"),
    CliCase("settings: a port beyond 65535", ["api"], {"API_PORT": "99999"}, 2,
            "expected 1 to 65535 (a TCP port)"),
    CliCase("settings: a number of 5000 digits", ["dlq", "list"], {"MAX_ATTEMPTS": "9" * 5000}, 2,
            "at most 18 digits"),
    CliCase("settings: a body cap below 1 KiB", ["api"], {"API_MAX_BODY_BYTES": "10"}, 2,
            "expected 1024 to 1073741824 bytes"),
    CliCase("settings: a redact key with a space", ["dlq", "list"], {"REDACT_KEYS": "pass word"}, 2,
            "REDACT_KEYS"),
    CliCase("settings: an archive URL with a password", ["dlq", "list"],
            {"ARCHIVE_URL": "mysql://u:url-pw@db/x"}, 2, "mysql://u:***@db/x"),
]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.kind for c in CLI_CASES])
def test_a_bad_argument_or_setting_is_one_line_and_its_exit_code(
    archive_url: str,
    record_id: int,
    case: CliCase,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {
        "ARCHIVE_URL": archive_url,
        "QUEUE_NAME": "corpus.jobs",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "ERROR",
        **case.env,
    }.items():
        monkeypatch.setenv(f"PROVIDER_JOBS_{name}", value)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as exited:
            main([part.replace("{id}", str(record_id)) for part in case.args])
    finally:
        # main() configures logging as a CLI process does (LOG_LEVEL=ERROR); later tests need it back.
        root.handlers, root.level = handlers, level

    out, err = capsys.readouterr()
    assert exited.value.code == case.code, err
    lines = err.strip().splitlines()
    if case.says:
        assert len(lines) == 1, err
        assert case.says in lines[0]
    else:
        assert lines == [], err
    assert "corpus-pw" not in out + err and "url-pw" not in err
    if "--json" in case.args:
        assert len(json.loads(out)["outcomes"]) == 1


def test_the_corpus_covers_at_least_twenty_classes() -> None:
    classes = {case.kind.split(":")[0] for case in API_CASES + CLI_CASES}
    assert len(API_CASES) + len(CLI_CASES) >= 40 and len(classes) >= 10
