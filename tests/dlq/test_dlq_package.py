from __future__ import annotations

import ast
from pathlib import Path

import provider_jobs.dlq as dlq


def _isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_names_only_what_exists() -> None:
    assert dlq.__all__ == sorted(dlq.__all__, key=_isort_key)
    assert all(hasattr(dlq, name) for name in dlq.__all__)


def test_the_dlq_package_never_imports_actors() -> None:
    for path in Path(dlq.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert "actors" not in (node.module or ""), path
            elif isinstance(node, ast.Import):
                assert all("actors" not in a.name for a in node.names), path
