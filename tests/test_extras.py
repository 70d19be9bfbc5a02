"""A part whose extra is not installed says which extra to install, in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from provider_jobs.extras import installed, missing_extra, missing_extra_line

#: Runs the ``provider-jobs`` entry point with the packages named first made unimportable.
WITHOUT = """
import sys
blocked, argv = sys.argv[1].split(","), sys.argv[2:]
for name in blocked:
    sys.modules[name] = None  # import raises ModuleNotFoundError, as when it is not installed
from provider_jobs.__main__ import main
main(argv)
"""


def _provider_jobs_without(blocked: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("missing", "extra"),
    [
        ("sqlalchemy.orm", "archive"),
        ("psycopg", "postgres"),
        ("fastapi", "api"),
        ("jinja2", "console"),
        ("opentelemetry.sdk", "otel"),
    ],
)
def test_a_missing_package_of_an_extra_names_that_extra(missing: str, extra: str) -> None:
    assert missing_extra(ModuleNotFoundError(f"No module named {missing!r}", name=missing)) == extra


def test_an_import_error_no_extra_fixes_names_none() -> None:
    assert missing_extra(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    assert missing_extra(ImportError("cannot import name 'x' from 'sqlalchemy'", name="sqlalchemy")) is None
    assert missing_extra_line(ModuleNotFoundError("No module named 'nope'", name="nope")) is None


def test_every_extra_is_installed_in_the_development_venv() -> None:
    assert all(installed(extra) for extra in ("archive", "postgres", "api", "console", "cli", "otel"))


def test_the_command_without_the_cli_extra_is_one_line_naming_it() -> None:
    result = _provider_jobs_without(["typer"], "--help")

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "provider-jobs: typer is not installed; it comes with an extra: pip install 'provider-jobs[cli]'\n"
    )


def test_a_command_without_the_archive_extra_is_one_line_naming_it() -> None:
    result = _provider_jobs_without(["sqlalchemy"], "dlq", "list")

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "provider-jobs: sqlalchemy is not installed; it comes with an extra: "
        "pip install 'provider-jobs[archive]'\n"
    )


def test_the_api_without_the_console_extra_serves_everything_but_the_console() -> None:
    code = (
        "import sys\n"
        "sys.modules['jinja2'] = None\n"
        "from provider_jobs.api import create_app\n"
        "from provider_jobs.settings import Settings\n"
        "paths = {getattr(route, 'path', '') for route in create_app(Settings()).routes}\n"
        "print('/healthz' in paths, any(p.startswith('/ui') for p in paths))\n"
        "print('provider_jobs.console' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert result.stdout.split() == ["True", "False", "False"]
