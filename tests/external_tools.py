"""External command-line tools the deploy and metrics tests call (promtool, docker compose, helm).

Locally a missing tool skips the test; in CI (``CI=true``) it fails it, so
that a green CI run means the tool ran. ``scripts/ensure-test-services.sh``
installs them; helm goes to :data:`TOOLS_DIR`, which is searched after PATH.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pika
import pika.exceptions
import pytest

#: Where ``scripts/ensure-helm.sh`` installs helm and kubectl (``TEST_TOOLS_DIR`` overrides).
TOOLS_DIR = Path(os.environ.get("TEST_TOOLS_DIR", "/opt/provider-jobs-tools"))


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str, install_hint: str) -> str:
    """The path of executable ``name`` on PATH or in :data:`TOOLS_DIR`.

    Skips the test locally, fails it in CI, when it is missing.
    """
    path = shutil.which(name) or shutil.which(name, path=str(TOOLS_DIR))
    if path is None:
        message = f"{name} is not installed ({install_hint})"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def consumer_count(url: str, queue: str) -> int:
    """Consumers of ``queue`` as RabbitMQ reports them; 0 when the queue does not exist yet."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()
