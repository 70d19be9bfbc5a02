"""configure_logging, as our CLI processes set it up."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from provider_jobs.log_config import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pika_level = logging.getLogger("pika").level
    yield
    root.handlers, root.level = handlers, level
    logging.getLogger("pika").setLevel(pika_level)
    structlog.reset_defaults()


def test_a_passive_look_up_of_a_queue_that_does_not_exist_yet_is_not_a_warning(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(log_format="json", level="INFO")
    channel_log = logging.getLogger("pika.channel")
    channel_log.warning(
        "Received remote Channel.Close (404): "
        "\"NOT_FOUND - no queue 'provider.jobs.retry.5000' in vhost '/'\""
    )
    channel_log.warning("Received remote Channel.Close (406): 'PRECONDITION_FAILED - inequivalent arg'")
    err = capsys.readouterr().err
    assert "retry.5000" not in err
    assert "PRECONDITION_FAILED" in err
