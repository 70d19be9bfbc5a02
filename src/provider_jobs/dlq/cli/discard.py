"""``provider-jobs dlq discard`` and ``purge``: take dead letters out of play (discarded, kept in
the archive and the audit log) or out of the archive (deleted for good)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..actions import discard_records
from ..archive.store import DISCARDED
from .common import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    CategoryOpt,
    GroupOpt,
    IdsArg,
    JsonOpt,
    OperationOpt,
    ProviderOpt,
    ReasonOpt,
    SearchOpt,
    SinceOpt,
    StatusOpt,
    UntilOpt,
    _check_text,
    _err,
    _filter,
    _out,
    _print_json,
    _session,
    _who,
)

__all__ = ["discard", "purge"]


def discard(
    ids: IdsArg = None,
    *,
    reason: Annotated[str, typer.Option(help="Why (required, kept in the audit log).")] = "",
    group: GroupOpt = None,
    category: CategoryOpt = None,
    provider: ProviderOpt = None,
    operation: OperationOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    search: SearchOpt = None,
    all_matching: Annotated[
        bool, typer.Option("--all", help="Discard every dead letter matching the filters.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Mark dead letters discarded (kept in the archive, never replayed by triage)."""
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    _check_text(reason, "--reason")
    ids = list(dict.fromkeys(ids)) if ids else ids
    selecting = any(v is not None for v in (group, category, provider, operation, since, until, search))
    if not ids and not selecting and not all_matching:
        raise typer.BadParameter("name ids, a --group, filters, or --all")
    with _session() as (settings, archive):
        record_filter = _filter(None, category, provider, operation, group, since, until, search, ids=ids)
        # Stored as an operation, as every bulk discard is: `dlq operations show` lists it.
        changed = discard_records(archive, record_filter, who=_who(settings), reason=reason)
    if as_json:
        _print_json({"discarded": changed})
    else:
        _out.print(f"Discarded {len(changed)} dead letter(s): {', '.join(map(str, changed)) or '-'}")
    if not changed:
        raise typer.Exit(EXIT_NOT_FOUND)


def purge(
    *,
    status: StatusOpt = None,
    category: CategoryOpt = None,
    provider: ProviderOpt = None,
    operation: OperationOpt = None,
    group: GroupOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    search: SearchOpt = None,
    reason: ReasonOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete (records are gone for good).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete records matching the filters from the archive (default: discarded ones)."""
    _check_text(reason, "--reason")
    record_filter = _filter(
        status, category, provider, operation, group, since, until, search, default_status=DISCARDED
    )
    with _session() as (settings, archive):
        if not yes:
            count = archive.count(record_filter)
            _err.print(f"Would delete {count} record(s); add --yes to delete them.")
            raise typer.Exit(EXIT_USAGE if count else EXIT_NOT_FOUND)
        deleted = archive.purge(record_filter, who=_who(settings), reason=reason)
    if as_json:
        _print_json({"deleted": deleted})
    else:
        _out.print(f"Deleted {deleted} record(s).")
    if not deleted:
        raise typer.Exit(EXIT_NOT_FOUND)
