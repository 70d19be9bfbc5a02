"""A console page whose archive cannot be read is a page saying so; the API's answer stays JSON."""

from __future__ import annotations

from fastapi.testclient import TestClient

from provider_jobs.api import create_app
from provider_jobs.settings import Settings

#: Nothing listens on port 1.
UNREACHABLE = "postgresql+psycopg://postgres:pw@127.0.0.1:1/test"


def test_an_unreachable_archive_is_a_page_on_the_console_and_json_on_the_api() -> None:
    client = TestClient(create_app(Settings(archive_url=UNREACHABLE)))
    page = client.get("/ui/records")
    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "unavailable" in page.text
    assert ":pw@" not in page.text, "the URL's password is masked"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    api = client.get("/dlq/records")
    assert api.status_code == 503
    assert api.json()["detail"].startswith("Archive postgresql+psycopg://postgres:***@")


def test_the_overview_says_the_archive_is_unreachable_and_still_shows_the_rest() -> None:
    client = TestClient(
        create_app(Settings(archive_url=UNREACHABLE, broker_url="amqp://guest:pw@127.0.0.1:1/%2F"))
    )
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.text.count('class="error"') == 2, "one for RabbitMQ, one for the archive"
