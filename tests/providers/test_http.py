"""HttpProvider against a real HTTP server on localhost."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from provider_jobs import errors
from provider_jobs.jobs import ProviderJob
from provider_jobs.middleware import ErrorClassifier
from provider_jobs.providers import HttpProvider, parse_retry_after


class Handler(BaseHTTPRequestHandler):
    """Answers ``POST /operations/<status>`` with that status; ``/operations/slow`` never answers in time."""

    received: ClassVar[list[dict]] = []
    #: The request headers of each call, beside its body in ``received``.
    received_headers: ClassVar[list[dict[str, str]]] = []
    release: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.received_headers.append({k.lower(): v for k, v in self.headers.items()})
        Handler.received.append(body)
        operation = self.path.rsplit("/", 1)[-1]
        if operation == "slow":
            Handler.release.wait(5)
            return
        if operation == "text":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
            return
        status = int(operation.removeprefix("s")) if operation.startswith("s") else 200
        payload = json.dumps(
            {"error": f"problem {status}"} if status >= 400 else {"id": body["job_id"]}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status in (429, 503):
            self.send_header("Retry-After", "12")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Handler.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def http_provider() -> Iterator[Callable[..., HttpProvider]]:
    made: list[HttpProvider] = []

    def make(url: str, **options: Any) -> HttpProvider:
        made.append(HttpProvider(url, **options))
        return made[-1]

    yield make
    for provider in made:
        provider.close()


def job(operation: str) -> ProviderJob:
    return ProviderJob(
        provider_namespace="ITL.Core",
        resource_type="ResourceGroup",
        operation=operation,
        request={"name": "rg"},
    )


def test_a_2xx_answer_is_the_result_and_the_job_is_posted_as_json(http_provider, server: str) -> None:
    provider = http_provider(server)
    the_job = job("create")
    assert provider.execute(the_job) == {"id": the_job.job_id}
    assert Handler.received[-1]["request"] == {"name": "rg"}


@pytest.mark.parametrize(
    ("status", "error_class", "category"),
    [
        (400, errors.ValidationFailed, "validation"),
        (422, errors.ValidationFailed, "validation"),
        (401, errors.AuthorizationFailed, "authorization"),
        (403, errors.Forbidden, "forbidden"),
        (404, errors.InvalidInput, "invalid_input"),
        (405, errors.UnsupportedOperation, "unsupported"),
        (501, errors.UnsupportedOperation, "unsupported"),
        (408, errors.ProviderTimeout, "timeout"),
        (504, errors.ProviderTimeout, "timeout"),
        (429, errors.ProviderBusy, "busy"),
        (502, errors.ServiceUnavailable, "service_unavailable"),
        (503, errors.ServiceUnavailable, "service_unavailable"),
        (500, errors.ServiceUnavailable, "service_unavailable"),
        (409, errors.InvalidInput, "invalid_input"),
    ],
)
def test_error_statuses_map_onto_error_classes(
    http_provider, server: str, status: int, error_class: type, category: str
) -> None:
    with pytest.raises(error_class) as caught:
        http_provider(server).execute(job(f"s{status}"))
    assert caught.value.status_code == status
    assert f"HTTP {status}" in str(caught.value) and f"problem {status}" in str(caught.value)
    assert ErrorClassifier()(caught.value).category.name == category


def test_retry_after_on_429_and_503_is_carried_to_the_retry_decision(http_provider, server: str) -> None:
    for status in (429, 503):
        with pytest.raises(errors.ProviderError) as caught:
            http_provider(server).execute(job(f"s{status}"))
        assert caught.value.retry_after_s == 12
        assert ErrorClassifier()(caught.value).suggested_delay_s == 12


def test_a_client_timeout_is_a_timeout_error(http_provider, server: str) -> None:
    with pytest.raises(errors.ProviderTimeout, match="Timeout calling"):
        http_provider(server, timeout_s=0.1).execute(job("slow"))


def test_a_refused_connection_is_a_connection_error(http_provider) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(errors.ProviderConnectionError) as caught:
        http_provider(f"http://127.0.0.1:{port}", connect_timeout_s=1).execute(job("create"))
    assert ErrorClassifier()(caught.value).category.name == "connection_error"


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_2xx_answer_that_is_not_json_is_a_success_with_its_text(http_provider, server: str) -> None:
    assert http_provider(server).execute(job("text")) == "ok"


def test_words_in_the_providers_url_never_decide_the_category(http_provider, server: str) -> None:
    with pytest.raises(errors.ProviderError) as caught:
        http_provider(f"{server}/authorization-validation").execute(job("s500"))
    assert ErrorClassifier()(caught.value).category.name == "service_unavailable"


def test_the_job_s_idempotency_key_is_sent_as_the_idempotency_key_header(http_provider, server: str) -> None:
    the_job = job("create")
    http_provider(server).execute(the_job)
    assert Handler.received_headers[-1]["idempotency-key"] == the_job.job_id
    assert Handler.received_headers[-1]["x-job-id"] == the_job.job_id


def test_a_key_of_its_own_is_sent_rather_than_the_job_id(http_provider, server: str) -> None:
    the_job = job("create").rekeyed()
    http_provider(server).execute(the_job)
    assert Handler.received_headers[-1]["idempotency-key"] == the_job.idempotency_key != the_job.job_id


def test_the_idempotency_header_s_name_is_configurable(http_provider, server: str) -> None:
    the_job = job("create")
    http_provider(server, idempotency_header="X-Request-Key").execute(the_job)
    assert Handler.received_headers[-1]["x-request-key"] == the_job.job_id
    assert "idempotency-key" not in Handler.received_headers[-1]


def test_an_idempotency_header_of_none_sends_no_key(http_provider, server: str) -> None:
    http_provider(server, idempotency_header=None).execute(job("create"))
    headers = Handler.received_headers[-1]
    assert "idempotency-key" not in headers and "x-job-id" in headers


@pytest.mark.parametrize("name", ["", "Idempotency Key", "Key:", "Clé", 5])
def test_an_idempotency_header_that_is_not_a_header_name_is_refused(name: object) -> None:
    with pytest.raises(
        ValueError, match=r"^idempotency_header=.* is not allowed: expected an HTTP header name"
    ):
        HttpProvider("http://127.0.0.1:1", idempotency_header=name)  # type: ignore[arg-type]
