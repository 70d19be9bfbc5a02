"""``provider-jobs providers``: the providers workers serve, and their breakers."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from ..errors import BrokerUnavailable
from ..settings import Settings
from .directory import ProviderEntry, read_directory

__all__ = ["format_providers", "providers_command"]


def _ago(now: float, at: float) -> str:
    return f"{max(0.0, now - at):.0f} s ago"


def format_providers(entries: list[ProviderEntry], *, now: float) -> str:
    """The table ``provider-jobs providers`` prints."""
    if not entries:
        return "No provider is registered by a running worker, and no breaker was seen."
    rows = [("PROVIDER", "REGISTERED", "STATE", "FAILURES", "NEXT PROBE", "WORKERS (LAST SEEN)")]
    for entry in entries:
        data = entry.as_dict()
        probe = data["next_probe_at"]
        held = data["retry_after_until"]
        next_probe = "-"
        if probe is not None:
            next_probe = f"in {max(0.0, probe - now):.1f} s"
        elif held is not None and held > now:
            next_probe = f"held {held - now:.1f} s"
        workers = ", ".join(f"{w['worker']} ({_ago(now, w['last_seen'])})" for w in data["workers"]) or "-"
        rows.append(
            (
                entry.key,
                "yes" if entry.registered else "no",
                entry.state.replace("_", "-"),
                str(data["failures"]),
                next_probe,
                workers,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)), row[-1]]).rstrip()
        for row in rows
    )


def providers_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds to read the health stream.")] = 5.0,
) -> None:
    """List the providers running workers have registered, who serves them, when each
    was last seen, and their circuit breakers (from the stream <queue>.health)."""
    import pika.exceptions

    from ..log_config import configure_logging

    settings = Settings.from_env()
    configure_logging(log_format=settings.log_format, level="WARNING", redact_keys=settings.redact_keys)
    try:
        directory, complete = read_directory(settings, timeout_s=timeout)
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"cannot read the health stream: {exc or type(exc).__name__}") from None
    entries = directory.entries()
    now = time.time()
    if as_json:
        typer.echo(json.dumps({"complete": complete, "providers": [e.as_dict() for e in entries]}, indent=2))
        return
    typer.echo(format_providers(entries, now=now))
    if not complete:
        typer.echo(f"(the health stream was not read to its end within {timeout:g} s)", err=True)
