"""Constants of the API tests, in a module of their own: test modules import them from here,
not from ``conftest`` (another directory's conftest may hold that name when several run together)."""

from __future__ import annotations

from metrics_workload import Workload

#: Dead letters the ``archived`` fixture makes: 3 validation errors, 2 exhausted timeouts.
DEAD_LETTERS = Workload(succeed=0, flaky=0, permanent=3, down=2)
#: The token of ``token_settings``.
TOKEN = "t0ken-for-tests"
