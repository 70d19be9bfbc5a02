"""Redactor: secret values masked at any depth and in text, views capped and saying so."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from provider_jobs.log_config import configure_logging
from provider_jobs.redaction import MASK, Redactor, mask_url_password


@pytest.mark.parametrize(
    "key",
    ["password", "PASSWORD", "db_password", "api_key", "X-Api-Key", "apiKey", "Authorization",
     "client_secret", "private_key", "access_token", "refresh-token", "Secret"],
)  # fmt: skip
def test_a_secret_key_is_masked_whatever_its_case_and_separators(key: str) -> None:
    assert Redactor().view({"outer": [{key: "s3cr3t"}]}) == {"outer": [{key: MASK}]}


def test_other_keys_and_missing_values_are_left_alone() -> None:
    value = {"name": "rg-1", "password": None, "count": 3, "ok": True}

    assert Redactor().view(value) == value


def test_the_keys_are_configurable() -> None:
    redactor = Redactor(keys=["ssn"])

    assert redactor.view({"ssn": "1", "password": "p"}) == {"ssn": MASK, "password": "p"}
    assert redactor.text("ssn=123 password=p") == "ssn=*** password=p"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqp://guest:***@127.0.0.1:5672/%2F"),
        ("postgresql+psycopg://app:pw@db/x failed", "postgresql+psycopg://app:***@db/x failed"),
        ("password=hunter2 next", "password=*** next"),
        ("{'password': 'hunter2', 'name': 'x'}", "{'password': '***', 'name': 'x'}"),
        ('{"db_password":"a b","token": "t"}', '{"db_password":"***","token": "***"}'),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("GET /x?api_key=abc&page=2", "GET /x?api_key=***&page=2"),
        ('job={\\"client_secret\\": \\"cs\\"}', 'job={\\"client_secret\\": \\"***\\"}'),
        ("The bearer token is not valid", "The bearer token is not valid"),
        ("missing required field 'name'", "missing required field 'name'"),
    ],
)
def test_secrets_in_text_are_masked(text: str, masked: str) -> None:
    assert Redactor().text(text) == masked


def test_a_url_without_a_password_is_left_alone() -> None:
    assert mask_url_password("http://host:8080/path and amqp://user@host/") == (
        "http://host:8080/path and amqp://user@host/"
    )


def test_reveal_shows_secrets_but_still_caps() -> None:
    redactor = Redactor(max_chars=8)

    assert redactor.view({"password": "hunter22-long"}, reveal=True) == {
        "password": "hunter22… (5 more characters not shown)"
    }


def test_nesting_deeper_than_the_cap_is_cut_and_says_so() -> None:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(5000):
        value = {"a": value}

    shown = Redactor(max_depth=3).view(value)

    assert shown == {"a": {"a": {"a": "… nested deeper than 3 levels: not shown"}}}


def test_long_lists_and_objects_are_cut_and_say_so() -> None:
    redactor = Redactor(max_items=2)

    assert redactor.view([1, 2, 3, 4]) == [1, 2, "… 2 more items not shown"]
    assert redactor.view({"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2, "…": "1 more keys not shown"}


def test_a_dataclass_is_shown_as_its_fields_and_bytes_as_text() -> None:
    @dataclasses.dataclass
    class Thing:
        token: str
        body: bytes

    assert Redactor().view(Thing(token="t", body=b"password=p \xff"), omit=()) == {
        "token": MASK,
        "body": "password=*** \ufffd",
    }


def test_log_lines_and_their_tracebacks_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(log_format="json", level="INFO")
    log = logging.getLogger("provider_jobs.test_redaction")
    try:
        log.info("connecting to %s", "amqp://u:pw-1@h/", extra={"job": {"request": {"token": "tk-1"}}})
        try:
            raise ValueError("bad job {'password': 'pw-2'}")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().handlers.clear()

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["event"] == "connecting to amqp://u:***@h/"
    assert lines[0]["job"] == {"request": {"token": "***"}}
    assert "pw-2" not in json.dumps(lines[1]) and "'password': '***'" in json.dumps(lines[1])
