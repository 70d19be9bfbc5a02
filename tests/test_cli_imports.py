"""A ``provider-jobs`` command imports only what it runs: a worker, a submit or a bad setting
loads neither the API (FastAPI) nor the archive (SQLAlchemy, Alembic)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

#: Runs ``provider-jobs`` with the arguments given on its command line, then prints the heavy
#: modules that got imported.
RUNNER = """
import contextlib, io, json, sys
from provider_jobs.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in ("fastapi", "sqlalchemy", "alembic", "uvicorn") if m in sys.modules)))
"""


def _heavy_modules_loaded(*args: str, **env: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(result.stdout)
    return loaded


@pytest.mark.parametrize(
    "args", [("worker", "--help"), ("submit", "--help"), ("queues", "migrate", "--help")]
)
def test_a_command_that_needs_neither_the_api_nor_the_archive_imports_neither(args: tuple[str, ...]) -> None:
    assert _heavy_modules_loaded(*args) == []


def test_a_worker_stopped_by_a_bad_setting_imports_neither_the_api_nor_the_archive() -> None:
    assert _heavy_modules_loaded("worker", PROVIDER_JOBS_WORKER_THREADS="abc") == []


def test_the_api_command_imports_the_api_when_it_is_looked_up() -> None:
    assert "fastapi" in _heavy_modules_loaded("api", "--help")


def test_the_dlq_command_imports_the_archive_when_it_is_looked_up() -> None:
    assert "sqlalchemy" in _heavy_modules_loaded("dlq", "groups", "--help")
