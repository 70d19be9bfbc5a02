"""The state of a provider's circuit breaker, as processes share it; what a job is told at its gate;
and the error of a job that waited too long (see :mod:`.breaker`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import dramatiq

__all__ = [
    "CLOSED",
    "DEFAULT_BREAKER_CATEGORIES",
    "HALF_OPEN",
    "MAX_HISTORY",
    "OPEN",
    "STATE_VALUES",
    "BreakerState",
    "Gate",
    "ProviderDown",
    "job_of",
    "provider_of",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

#: Gauge value of each state in ``provider_jobs_breaker_state``.
STATE_VALUES: Mapping[str, int] = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

#: Categories that say the provider itself is unhealthy. ``provider_not_found`` is not one:
#: with no provider registered there is nothing to protect.
DEFAULT_BREAKER_CATEGORIES = frozenset(
    {"provider_not_available", "connection_error", "timeout", "service_unavailable", "busy"}
)

#: Transitions kept in a breaker's history.
MAX_HISTORY = 20


def provider_of(message: dramatiq.MessageProxy | dramatiq.Message[Any]) -> str | None:
    """The breaker key of a message: its ``provider`` option, as our actors set it."""
    value = message.options.get("provider")
    return value if isinstance(value, str) and value else None


def job_of(message: dramatiq.MessageProxy | dramatiq.Message[Any]) -> str:
    """The job a message carries, the same for every attempt: its ``job_id`` option, as our
    actors set it, or else its message id (which Dramatiq keeps across retries)."""
    value = message.options.get("job_id")
    return value if isinstance(value, str) and value else message.message_id


@dataclass(frozen=True, slots=True)
class BreakerState:
    """One provider's breaker, as this process knows it; times are epoch seconds.

    Args:
        key: The provider, ``namespace/resource_type``.
        state: ``closed``, ``open`` or ``half_open``.
        failures: Failing jobs within the window when it opened; the probes that failed when it
            reopened.
        opened_at: When it last opened; ``None`` when closed.
        next_probe_at: When the next probe may go; ``None`` when closed.
        retry_after_until: No job goes before this (the provider's ``Retry-After``); 0 when none.
        probes: Probes sent since it opened.
        last_category: The category of the last health failure.
        updated_at: When this state was last changed, here or in another process.
        updated_by: The worker that changed it.
        history: The last transitions, oldest first.
    """

    key: str
    state: str = CLOSED
    failures: int = 0
    opened_at: float | None = None
    next_probe_at: float | None = None
    retry_after_until: float = 0.0
    probes: int = 0
    last_category: str | None = None
    updated_at: float = 0.0
    updated_by: str = ""
    history: tuple[dict[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of this state."""
        data = asdict(self)
        data["history"] = list(self.history)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BreakerState:
        """The state :meth:`as_dict` wrote; unknown keys are ignored.

        Raises:
            ValueError: ``data`` is not such a state.
        """
        key, state = data.get("key"), data.get("state", CLOSED)
        if not isinstance(key, str) or state not in STATE_VALUES:
            raise ValueError(f"not a breaker state: key={key!r} state={state!r}")

        def number(name: str, default: float | None) -> float | None:
            value = data.get(name, default)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default

        history = data.get("history") or ()
        return cls(
            key=key,
            state=state,
            failures=int(number("failures", 0) or 0),
            opened_at=number("opened_at", None),
            next_probe_at=number("next_probe_at", None),
            retry_after_until=number("retry_after_until", 0.0) or 0.0,
            probes=int(number("probes", 0) or 0),
            last_category=data.get("last_category") if isinstance(data.get("last_category"), str) else None,
            updated_at=number("updated_at", 0.0) or 0.0,
            updated_by=str(data.get("updated_by", "")),
            history=tuple(h for h in history if isinstance(h, dict))[-MAX_HISTORY:],
        )


@dataclass(frozen=True, slots=True)
class Gate:
    """Whether a job may go to its provider now.

    Args:
        admit: It may.
        probe: It goes as the probe of an open breaker.
        wait_s: Otherwise, how long it should wait, in seconds.
        reason: Why it waits: ``open`` or ``retry_after``; ``""`` when admitted.
    """

    admit: bool
    probe: bool = False
    wait_s: float = 0.0
    reason: str = ""


class ProviderDown(Exception):
    """A job waited for its provider's open breaker for the breaker's whole ``max_wait_s``.

    Args:
        key: The provider.
        state: Its breaker, history included.
        waited_s: How long the job waited, in seconds.
    """

    category = "provider_down"

    def __init__(self, key: str, state: BreakerState, *, waited_s: float) -> None:
        since = ""
        if state.opened_at is not None:
            since = f" since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(state.opened_at))}"
        super().__init__(
            f"Provider {key} is down: the job waited {waited_s:.3g} s for its circuit breaker, "
            f"{state.state.replace('_', '-')}{since} ({state.last_category or 'unknown'} failures; "
            f"{state.probes} probe(s) sent)"
        )
        self.key = key
        self.state = state
