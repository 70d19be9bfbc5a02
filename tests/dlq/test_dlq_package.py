from __future__ import annotations

import provider_jobs.dlq as dlq


def _isort_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_names_only_what_exists() -> None:
    assert dlq.__all__ == sorted(dlq.__all__, key=_isort_key)
    assert all(hasattr(dlq, name) for name in dlq.__all__)
