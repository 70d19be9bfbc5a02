"""A worker process does not load rich; everything else can still use it."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_importing_the_worker_entry_point_does_not_load_rich() -> None:
    assert _run("import sys, provider_jobs.actors; print('rich' in sys.modules)").strip() == "False"


def test_rich_imports_normally_afterwards() -> None:
    code = "import provider_jobs.actors, rich.console; print(rich.console.Console.__name__)"
    assert _run(code).strip() == "Console"


def test_a_process_that_loaded_rich_first_keeps_it() -> None:
    code = "import rich, provider_jobs, structlog.dev; print(structlog.dev.rich is rich)"
    assert _run(code).strip() == "True"
