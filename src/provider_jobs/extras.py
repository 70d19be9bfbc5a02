"""The optional parts of provider-jobs: which extra installs which package, and the line naming one.

A bare ``pip install provider-jobs`` runs workers and the middleware; the
archive, PostgreSQL, the API, the console, the ``provider-jobs`` command and
tracing are extras, as ``dramatiq[rabbitmq]`` is for Dramatiq.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

__all__ = ["EXTRA_OF_PACKAGE", "installed", "missing_extra", "missing_extra_line"]

#: The top-level import name of each extra's packages, and the extra that installs it.
EXTRA_OF_PACKAGE: Mapping[str, str] = {
    "sqlalchemy": "archive",
    "alembic": "archive",
    "psycopg": "postgres",
    "fastapi": "api",
    "starlette": "api",
    "uvicorn": "api",
    "jinja2": "console",
    "itsdangerous": "console",
    "typer": "cli",
    "click": "cli",
    "rich": "cli",
    "opentelemetry": "otel",
}


def installed(extra: str) -> bool:
    """Whether every package that ``extra`` installs can be imported (nothing is imported to find out)."""
    return all(
        importlib.util.find_spec(package) is not None
        for package, its_extra in EXTRA_OF_PACKAGE.items()
        if its_extra == extra
    )


def missing_extra(exc: ImportError) -> str | None:
    """The extra that installs the package ``exc`` found missing; ``None`` for any other import error."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return None
    return EXTRA_OF_PACKAGE.get(exc.name.partition(".")[0])


def missing_extra_line(exc: ImportError) -> str | None:
    """One line naming the extra to install, for an import error an extra would fix; else ``None``."""
    extra = missing_extra(exc)
    if extra is None:
        return None
    return f"{exc.name} is not installed; it comes with an extra: pip install 'provider-jobs[{extra}]'"
