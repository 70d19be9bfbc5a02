"""Each package's __all__ is sorted, complete and importable."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "provider_jobs",
    "provider_jobs.middleware",
    "provider_jobs.providers",
    "provider_jobs.actors",
    "provider_jobs.errors",
    "provider_jobs.extras",
    "provider_jobs.jobs",
    "provider_jobs.settings",
    "provider_jobs.rabbitmq",
    "provider_jobs.dlq",
    "provider_jobs.dlq.archive",
    "provider_jobs.dlq.archiver",
    "provider_jobs.dlq.replay",
    "provider_jobs.dlq.cli",
    "provider_jobs.console",
    "provider_jobs.tracing",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical.
    assert module.__all__ == sorted(
        module.__all__, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)
    )
    assert all(hasattr(module, attr) for attr in module.__all__)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_class_or_function_defined_there_is_exported(name: str) -> None:
    module = importlib.import_module(name)
    defined = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").startswith(name)
    }
    assert defined <= set(module.__all__)


def test_the_import_contracts_of_the_layout_are_kept() -> None:
    """The package's layers (entry points on top, middleware and the leaves at the bottom), dlq's
    (the archive at its bottom), and the operator CLI, the API and the console independent (the
    contracts are in pyproject.toml; `make check` runs them too)."""
    import subprocess
    import sys
    from pathlib import Path

    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
