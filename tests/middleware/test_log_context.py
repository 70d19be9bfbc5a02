from __future__ import annotations

import json
import logging

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from provider_jobs.log_config import configure_logging
from provider_jobs.middleware import ClassifiedRetries, LogContext


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def test_lines_logged_while_a_job_runs_name_it_and_later_lines_do_not(capsys, restore_logging) -> None:
    configure_logging(log_format="json", level="INFO")
    broker = StubBroker(middleware=[LogContext(), ClassifiedRetries(log_success=False)])
    broker.emit_after("process_boot")

    @dramatiq.actor(broker=broker)
    def job() -> None:
        logging.getLogger("some.provider").info("calling the backend")

    job.send_with_options(job_id="job-42", provider="ITL.Core/ResourceGroup", operation="create")
    worker = dramatiq.Worker(broker, worker_timeout=10)
    worker.start()
    try:
        broker.join(job.queue_name)
        worker.join()
    finally:
        worker.stop()
    logging.getLogger("some.provider").info("after the job")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    during = next(line for line in lines if line["event"] == "calling the backend")
    after = next(line for line in lines if line["event"] == "after the job")
    assert (during["job_id"], during["provider"], during["operation"], during["attempt"]) == (
        "job-42",
        "ITL.Core/ResourceGroup",
        "create",
        1,
    )
    assert "job_id" not in after
