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
    "provider_jobs.jobs",
    "provider_jobs.settings",
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


def test_middleware_imports_nothing_of_ours_but_errors() -> None:
    import ast
    from pathlib import Path

    package = Path(importlib.import_module("provider_jobs.middleware").__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                assert node.module == "errors", f"{path.name} imports ..{node.module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("provider_jobs"), f"{path.name} imports {node.module}"
