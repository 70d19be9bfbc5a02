"""``provider-jobs dlq process``: triage the dead letters by policy (replay, discard, escalate),
and with ``--dry-run`` show what a recovery of each healthy provider would replay."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ...health.watch import follow_breakers
from ...settings import Settings
from ..replay.replayer import Replayer
from ..triage import DEFAULT_POLICY, DlqPolicy, process_dlq
from .common import (
    EXIT_BROKER,
    JsonOpt,
    _err,
    _out,
    _print_json,
    _session,
    _who,
)
from .progress import _show_pause

__all__ = ["process"]


def _announced_providers(settings: Settings) -> set[str]:
    """Providers running workers announce and whose breaker is closed; none when RabbitMQ
    cannot be read (a warning says so)."""
    import pika.exceptions

    from ...health import read_directory

    try:
        directory, _ = read_directory(settings, timeout_s=3.0)
    except (pika.exceptions.AMQPError, OSError) as exc:
        _err.print(
            f"warning: cannot read the providers workers announce ({type(exc).__name__})", highlight=False
        )
        return set()
    return {entry.key for entry in directory.entries() if entry.healthy}


def process(
    policy_file: Annotated[str | None, typer.Option("--policy", help="TOML or JSON policy file.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the plan; change nothing.")] = False,
    ignore_breaker: Annotated[
        bool,
        typer.Option("--ignore-breaker", help="Send records whose provider's breaker is open too, at once."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Triage dead letters by policy: replay, discard, escalate (default: the built-in policy).

    A provider counts as registered when it is configured here or a running worker
    announces it; --dry-run also shows what a recovery of each healthy provider would replay.
    The records a rule replays wait while their provider's circuit breaker is open, as in
    `dlq replay`; --ignore-breaker sends them anyway.
    """
    from ...providers import ProviderRegistry, load_providers
    from ..recovery import recovery_plan

    with _session() as (settings, archive):
        path = policy_file or settings.dlq_policy_file
        policy = DlqPolicy.load(path) if path else DEFAULT_POLICY
        registry = ProviderRegistry()
        load_providers(registry, spec=settings.providers, path=settings.providers_file)
        healthy = _announced_providers(settings)
        replayer = Replayer(archive=archive, broker_url=settings.broker_url, who=_who(settings))
        with follow_breakers(settings, ignore=dry_run or ignore_breaker) as health:
            report = process_dlq(
                archive,
                policy=policy,
                replayer=replayer,
                providers=set(registry.keys()) | healthy,
                dry_run=dry_run,
                who=_who(settings),
                redactor=settings.redactor(),
                health=health,
                on_pause=_show_pause,
            )
        recoveries = (
            [recovery_plan(archive, key, policy.recovery_categories) for key in sorted(healthy)]
            if dry_run
            else []
        )
    redactor = settings.redactor()
    if as_json:
        _print_json(
            {
                "dry_run": dry_run,
                "decisions": [redactor.view(d) for d in report.decisions],
                "replay": [redactor.view(o) for o in report.replay.outcomes] if report.replay else [],
                "paused": [p.as_dict() for p in report.replay.pauses] if report.replay else [],
                "recovery": [
                    {"provider": p.provider, "record_ids": list(p.record_ids)}
                    for p in recoveries
                    if p.record_ids
                ],
            }
        )
    else:
        table = Table(
            title=f"{'plan' if dry_run else 'triage'}: {len(report.decisions)} dead letter(s)",
            title_justify="left",
        )
        for name in ("id", "job", "category", "rule", "action", "why"):
            table.add_column(name, overflow="fold")
        for d in report.decisions:
            table.add_row(
                str(d.record_id),
                Text((d.job_id or "-")[:12]),
                Text(d.category or "-"),
                Text(d.rule or "-"),
                d.action,
                Text(redactor.view(d.detail)),
            )
        _out.print(table)
        for pause in report.replay.pauses if report.replay else []:
            _out.print(Text(f"paused: {pause.describe()}, then sent"))
        for plan in recoveries:
            if plan.record_ids:
                _out.print(
                    Text(
                        f"recovery of {plan.provider} would replay {len(plan.record_ids)} dead letter(s) "
                        f"({', '.join(policy.recovery_categories)}): ids "
                        + ", ".join(map(str, plan.record_ids[:20]))
                        + (" ..." if len(plan.record_ids) > 20 else "")
                    )
                )
    if report.replay is not None and report.replay.failed:
        raise typer.Exit(EXIT_BROKER)
