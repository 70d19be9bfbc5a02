"""The console's operations: bulk replays and discards stored in the archive, listed, followed live
(the progress part refreshes itself), paused, resumed (following the providers' breakers) or
cancelled by a form, and their uncertain records resolved as sent or not sent."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..dlq.archive.operations import FAILED_STATE, SKIPPED, UNCERTAIN
from ..dlq.operations import operation_view
from ..errors import RecordConflict
from ..health.watch import follow_breakers
from .context import ConsoleContext, Form, Refused
from .session import Operator

__all__ = ["operations_router"]

#: Operations the list shows, newest first.
LISTED = 100
#: Records that need a look (failed, uncertain, skipped) one operation's page lists.
RECORDS_SHOWN = 200
#: How often an operation's progress refreshes itself, in milliseconds.
REFRESH_MS = 1000

OperationId = Annotated[int, Path(ge=1, le=2**53)]


def operations_router(console: ConsoleContext) -> APIRouter:
    """The operations pages and their forms, under ``/ui/operations``."""
    router = APIRouter(prefix="/ui/operations", include_in_schema=False)
    operations, pages, redactor = console.operations, console.pages, console.redactor
    current = Depends(console.operator)

    def view(operation_id: int) -> dict[str, Any]:
        shown: dict[str, Any] = redactor.view(operation_view(operations.get(operation_id)))
        return shown

    @router.get("", response_class=HTMLResponse)
    def operation_list(request: Request, operator: Operator = current) -> HTMLResponse:
        found = [redactor.view(operation_view(o)) for o in operations.latest(limit=LISTED)]
        return pages.render(request, "operations.html", operator, operations=found)

    @router.get("/{operation_id}", response_class=HTMLResponse)
    def operation_page(
        request: Request, operation_id: OperationId, operator: Operator = current
    ) -> HTMLResponse:
        listed = operations.records(
            operation_id, states=[FAILED_STATE, UNCERTAIN, SKIPPED], limit=RECORDS_SHOWN
        )
        return pages.render(
            request,
            "operation.html",
            operator,
            op=view(operation_id),
            records=[redactor.view(r) for r in listed],
            every_ms=REFRESH_MS,
        )

    @router.get("/{operation_id}/progress", response_class=HTMLResponse)
    def operation_progress(
        request: Request, operation_id: OperationId, operator: Operator = current
    ) -> HTMLResponse:
        return pages.render(request, "_operation.html", operator, op=view(operation_id))

    @router.post("/{operation_id}/{action}", response_class=HTMLResponse)
    def steer(request: Request, action: str, form: Form, operation_id: OperationId) -> Response:
        _, who = console.writer(request, form)
        try:
            if action == "pause":
                operations.pause(operation_id)
            elif action == "cancel":
                operations.cancel(operation_id)
            elif action == "resume":
                replay = operations.get(operation_id).action == "replay"
                operations.run_in_background(
                    operation_id,
                    take_over=True,
                    health=lambda: follow_breakers(console.settings, ignore=not replay),
                )
            elif action == "resolve":
                if form.get("sent") not in ("yes", "no"):
                    raise Refused(422, "sent: expected yes or no")
                operations.resolve(operation_id, sent=form["sent"] == "yes", who=who)
            else:
                raise Refused(404, f"No such action on an operation: {action}")
        except RecordConflict as exc:
            raise Refused(409, redactor.text(str(exc))) from None
        return RedirectResponse(f"/ui/operations/{operation_id}", status_code=303)

    return router
