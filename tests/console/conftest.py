"""Console fixtures: the demo's dead letters in a real archive, the API (and so the console)
served by uvicorn on a free port, a real worker that runs replays, and Debian's Chromium
driven by Playwright (one browser per module)."""

from __future__ import annotations

import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from console_support import AXE, READ_TOKEN, TOKEN, Demo
from dramatiq.common import xq_name

from external_tools import in_ci, require_tool
from provider_jobs.actors.broker import build_broker
from provider_jobs.actors.provider_ops import declare_provider_actors
from provider_jobs.api import create_app
from provider_jobs.compat import JobQueue
from provider_jobs.demo import DEMO_JOBS, demo_registry
from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver
from provider_jobs.settings import Settings

from support import depth_or_zero, running_worker, wait_for


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The session node and the test's queue, a SQLite archive in ``tmp_path``, the API tokens."""
    return settings.replace(
        archive_url=f"sqlite:///{tmp_path}/archive.sqlite3",
        api_token=TOKEN,
        api_read_token=READ_TOKEN,
    )


@pytest.fixture
def archive(settings: Settings, demo: Demo) -> Iterator[DeadLetterArchive]:
    """The test's archive, opened once the demo's records were copied into it."""
    archive = DeadLetterArchive(settings.archive_url)
    yield archive
    archive.close()


@pytest.fixture(scope="module")
def demo_queue() -> str:
    """The queue of a module's tests: the demo's records name it, so that their replays reach
    the worker of the test that replays them."""
    return f"test.console.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def queue_name(demo_queue: str) -> str:
    return demo_queue


@pytest.fixture(scope="module")
def demo_archive(
    rabbitmq_url: str, demo_queue: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The demo's four jobs run once per module by a real worker; its two dead letters (a validation
    error, an exhausted service_unavailable) archived in a SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("demo") / "archive.sqlite3"
    settings = Settings(
        broker_url=rabbitmq_url,
        queue_name=demo_queue,
        retry_delay_s=0.02,
        worker_threads=2,
        worker_timeout_ms=20,
        worker_id="test-worker",
        archive_url=f"sqlite:///{path}",
    )
    archive = DeadLetterArchive(settings.archive_url)
    broker = build_broker(settings)
    declare_provider_actors(broker, demo_registry(), settings)
    with running_worker(broker):
        queue = JobQueue(settings=settings)
        try:
            for fields in DEMO_JOBS:
                queue.submit(**fields)
        finally:
            queue.close()
        wait_for(lambda: depth_or_zero(rabbitmq_url, xq_name(demo_queue)) == 2, timeout_s=20)
    DeadLetterArchiver.from_settings(settings, archive=archive).run(until_idle=True)
    assert archive.count() == 2
    archive.close()
    yield path


@pytest.fixture
def demo(settings: Settings, demo_archive: Path, tmp_path: Path, amqp: Any) -> Demo:
    """The demo's dead letters, in this test's own copy of the archive."""
    target = Path(settings.archive_url.removeprefix("sqlite:///"))
    for part in demo_archive.parent.glob(demo_archive.name + "*"):
        shutil.copy(part, target.parent / part.name.replace(demo_archive.name, target.name))
    archive = DeadLetterArchive(settings.archive_url)
    try:
        ids = [r.id for r in archive.find(limit=10, oldest_first=True) if r.id is not None]
    finally:
        archive.close()
    return Demo(registry=demo_registry(), ids=ids)


@pytest.fixture
def worker(settings: Settings, demo: Demo) -> Iterator[Demo]:
    """A real worker with the demo's providers on the demo's queue, for replays to run."""
    broker = build_broker(settings)
    declare_provider_actors(broker, demo.registry, settings)
    with running_worker(broker):
        yield demo


def _serve(settings: Settings, archive: DeadLetterArchive) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, archive=archive), log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=10)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def console_url(settings: Settings, archive: DeadLetterArchive) -> Iterator[str]:
    """The API with its console, served on a free port; its base URL."""
    yield from _serve(settings, archive)


@pytest.fixture
def open_console_url(settings: Settings, archive: DeadLetterArchive) -> Iterator[str]:
    """The API with its console and no token configured."""
    yield from _serve(settings.replace(api_token=None, api_read_token=None), archive)


@pytest.fixture
def proxy_console_url(settings: Settings, archive: DeadLetterArchive) -> Iterator[str]:
    """The API with its console behind a reverse proxy that names the user in ``X-Forwarded-User``."""
    yield from _serve(settings.replace(console_user_header="X-Forwarded-User"), archive)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright; one per test module."""
    executable = require_tool("chromium", "apt-get install chromium; scripts/ensure-test-services.sh does")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, chromium_sandbox=False)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and its page; actions wait 10 s at most."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def axe_source() -> str:
    """axe-core's script (the npm package), to inject into pages."""
    if not AXE.exists():
        message = f"axe-core is not installed at {AXE} (scripts/ensure-test-services.sh installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return AXE.read_text(encoding="utf-8")
