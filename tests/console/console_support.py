"""Helpers of the console's browser tests: tokens, the demo's run, logging in as a person does."""

from __future__ import annotations

import dataclasses
from typing import Any

from external_tools import TOOLS_DIR
from provider_jobs.providers import ProviderRegistry

#: The token the console's tests log in with.
TOKEN = "console-t0ken"
#: The read-only token.
READ_TOKEN = "console-read-t0ken"
#: Where ``scripts/ensure-test-services.sh`` puts axe-core.
AXE = TOOLS_DIR / "axe-core" / "axe.min.js"


@dataclasses.dataclass
class Demo:
    """The demo's run: its providers (to see a replayed job succeed) and the archive ids."""

    registry: ProviderRegistry
    ids: list[int]

    def created_groups(self) -> dict[str, Any]:
        """Resource groups the demo's ResourceGroup provider created."""
        provider: Any = self.registry.get("ITL.Core", "ResourceGroup")
        return dict(provider.groups)


def log_in(page: Any, base: str, *, name: str = "alice", token: str = TOKEN, next_path: str = "/ui/") -> None:
    """Log in through the login page, as a person would, and land on ``next_path``."""
    page.goto(f"{base}{next_path}")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}{next_path}")
