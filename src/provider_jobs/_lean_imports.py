"""Imported first by the package: loads structlog without rich, which worker processes never use.

structlog's ``dev`` module, which ``import structlog`` loads, imports rich when
it is installed (the CLI needs it) to pretty-print tracebacks in its console
renderer. That is 4 MiB of every worker process's memory, a sixth of a plain
Dramatiq worker's, for a renderer that works without it (plain tracebacks).
rich is hidden only while structlog is imported; ``import rich`` works as
usual afterwards, and a process that imported rich first keeps structlog's use
of it.
"""

from __future__ import annotations

import sys

if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]  # makes `import rich` raise ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]
