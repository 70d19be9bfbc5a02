"""``provider-jobs``: run workers, submit jobs, run the demo."""

from __future__ import annotations

import functools
import json
import logging
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar
from urllib.parse import quote

import dramatiq
import typer
from typer.core import TyperGroup

from . import identity
from .demo import DEMO_JOBS, demo_registry
from .errors import ProviderJobsError
from .extras import installed
from .log_config import configure_logging
from .providers import ProviderRegistry, load_providers
from .redaction import mask_url_password
from .settings import Settings
from .tracing import configure_tracing

if TYPE_CHECKING:
    # Typer's own (vendored) click, whose types its groups and commands are made of.
    from typer._click import Command, Context

__all__ = ["app", "main", "one_line_errors"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def one_line_errors(command: Callable[_P, _R]) -> Callable[_P, _R]:
    """Report our own errors (bad settings, unreachable broker) as one line and exit 2."""

    @functools.wraps(command)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return command(*args, **kwargs)
        except ProviderJobsError as exc:
            typer.echo(f"provider-jobs: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _archiver_command() -> Command:
    from .dlq.cli.app import archiver

    return _single_command("archiver", archiver)


def _api_command() -> Command:
    from .api.server import api_command

    return _single_command("api", api_command)


def _providers_command() -> Command:
    from .health.cli import providers_command

    return _single_command("providers", one_line_errors(providers_command))


def _dlq_group() -> Command:
    from .dlq.cli.app import dlq_app

    return _group("dlq", dlq_app)


def _archive_group() -> Command:
    from .dlq.cli.app import archive_app

    return _group("archive", archive_app)


def _single_command(name: str, function: Callable[..., Any]) -> Command:
    holder = typer.Typer(add_completion=False)
    holder.command(name)(function)
    return typer.main.get_command(holder)


def _group(name: str, sub_app: typer.Typer) -> Command:
    group = typer.main.get_group(sub_app)
    group.name = name
    return group


#: Commands whose modules import the archive (SQLAlchemy, Alembic) or the API (FastAPI): each is
#: imported when it runs or its help is shown, so a worker, a submit or a bad setting pays for none.
_LAZY_COMMANDS: dict[str, Callable[[], Command]] = {
    "archiver": _archiver_command,
    "api": _api_command,
    "providers": _providers_command,
    "dlq": _dlq_group,
    "archive": _archive_group,
}

#: The order ``provider-jobs --help`` lists the commands in.
_HELP_ORDER = ("archiver", "api", "providers", "worker", "submit", "demo", "dlq", "archive", "queues")


class _LazyGroup(TyperGroup):
    """The top-level group: builds a command of ``_LAZY_COMMANDS`` when it is first looked up."""

    def list_commands(self, ctx: Context) -> list[str]:
        names = [*super().list_commands(ctx), *_LAZY_COMMANDS]
        return sorted(
            names, key=lambda name: _HELP_ORDER.index(name) if name in _HELP_ORDER else len(_HELP_ORDER)
        )

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in _LAZY_COMMANDS and cmd_name not in self.commands:
            self.add_command(_LAZY_COMMANDS[cmd_name](), cmd_name)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_LazyGroup,
    help="Provider operations as Dramatiq actors on RabbitMQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
logger = logging.getLogger("provider_jobs.cli")


def _settings(service_name: str = "provider-jobs") -> Settings:
    settings = Settings.from_env()
    configure_logging(
        log_format=settings.log_format, level=settings.log_level, redact_keys=settings.redact_keys
    )
    # Traces from the standard OTEL_* variables (off when none is set), under this service name.
    configure_tracing(service_name=service_name)
    return settings


def _run_worker(
    settings: Settings,
    registry: ProviderRegistry,
    *,
    until_idle: bool = False,
    archiver: bool = False,
    api: bool = False,
    on_idle: Callable[[], None] | None = None,
) -> None:
    """Run a worker, and optionally the archiver and the API, in this process.

    Args:
        settings: Broker, queue, worker, archive and API settings.
        registry: The providers the worker runs jobs with.
        until_idle: Return once the queue, its delay queue (and its XQ, with
            ``archiver``) are empty; otherwise run until interrupted.
        archiver: Also drain ``<queue>.XQ`` into the archive, in a thread.
        api: Also serve the HTTP API on ``api_host:api_port``, in a thread.
        on_idle: Called once the queues are first empty.
    """
    from .actors.broker import build_broker
    from .actors.provider_ops import declare_provider_actors

    # Worked out once: the broker's middleware and consumers, and the log line below, name it alike.
    settings = settings.replace(worker_id=identity.worker_id(settings.worker_id))
    broker = build_broker(settings, tracer_provider=configure_tracing(service_name="provider-jobs-worker"))
    declare_provider_actors(broker, registry, settings)
    # A queue of the other type (PROVIDER_JOBS_QUEUE_TYPE) stops here with one line.
    broker.declare_queue(settings.queue_name, ensure=True)
    worker = dramatiq.Worker(
        broker, worker_threads=settings.worker_threads, worker_timeout=settings.worker_timeout_ms
    )
    stops: list[Callable[[], None]] = [worker.stop]
    threads: list[threading.Thread] = []
    if archiver:
        from .dlq.archiver.consumer import DeadLetterArchiver

        drain = DeadLetterArchiver.from_settings(settings)
        threads.append(threading.Thread(target=drain.run, name="archiver", daemon=True))
        stops.append(drain.stop)
        if not until_idle:
            from .dlq.recovery import start_recovery

            recovery = start_recovery(settings, drain.archive)
            if recovery is not None:
                stops.append(recovery.stop)
    if api:
        import uvicorn

        from .api.app import create_app

        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings), host=settings.api_host, port=settings.api_port, log_config=None
            )
        )
        threads.append(threading.Thread(target=server.run, name="api", daemon=True))
        stops.append(lambda: setattr(server, "should_exit", True))
        if installed("console"):
            logger.info("DLQ console: http://%s:%d/ui/", settings.api_host, settings.api_port)
        else:
            logger.info(
                "API: http://%s:%d/ (the console needs pip install 'provider-jobs[console]')",
                settings.api_host,
                settings.api_port,
            )
    if threading.current_thread() is threading.main_thread():
        # Kubernetes stops a pod with SIGTERM: the same orderly stop as Ctrl-C (this is our own process).
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    worker.start()
    for thread in threads:
        thread.start()
    logger.info(
        "Worker %s consuming %s with %d thread(s); providers: %s",
        settings.worker_id,
        settings.queue_name,
        settings.worker_threads,
        ", ".join(registry.keys()) or "none",
    )
    try:
        if until_idle or on_idle is not None:
            _wait_until_idle(settings, archiver=archiver, worker=worker)
            worker.join()
            if on_idle is not None:
                on_idle()
        while not until_idle:
            time.sleep(3600)
    except KeyboardInterrupt:
        logger.info("Interrupted; stopping: running jobs finish, unstarted ones go back to RabbitMQ")
    finally:
        for stop in reversed(stops):
            stop()
        for thread in threads:
            thread.join(timeout=10)
        broker.close()


def _wait_until_idle(
    settings: Settings, *, archiver: bool, worker: dramatiq.Worker, successes: int = 5, idle_s: float = 0.2
) -> None:
    """Block until every watched queue has been empty, and ``worker`` held no retry,
    ``successes`` times in a row."""
    import pika
    import pika.exceptions

    from .actors.consumer import held_retries
    from .rabbitmq.connectivity import broker_parameters
    from .rabbitmq.queues import queue_roles

    names = [name for name, role in queue_roles(settings) if archiver or role != "dead_letter"]
    connection = pika.BlockingConnection(broker_parameters(settings.broker_url))
    try:
        in_a_row = 0
        while in_a_row < successes:
            channel = connection.channel()
            total = held_retries(worker)
            for name in names:
                try:
                    total += channel.queue_declare(name, passive=True).method.message_count
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 404:
                        raise
                    channel = connection.channel()
            if channel.is_open:
                channel.close()
            in_a_row = in_a_row + 1 if total == 0 else 0
            connection.sleep(idle_s)
    finally:
        connection.close()


@app.command()
@one_line_errors
def worker(
    demo_providers: Annotated[bool, typer.Option(help="Also register the demo providers.")] = False,
) -> None:
    """Run a worker in this process (threads: PROVIDER_JOBS_WORKER_THREADS).

    Providers come from PROVIDER_JOBS_PROVIDERS and PROVIDER_JOBS_PROVIDERS_FILE.
    For several processes use the Dramatiq CLI: `dramatiq provider_jobs.worker`.
    """
    from .rabbitmq.connectivity import check_broker

    settings = _settings("provider-jobs-worker")
    check_broker(settings.broker_url)
    registry = demo_registry() if demo_providers else ProviderRegistry()
    load_providers(registry, spec=settings.providers, path=settings.providers_file)
    _run_worker(settings, registry)


@app.command()
@one_line_errors
def submit(
    provider: Annotated[str, typer.Argument(help="Namespace/ResourceType, e.g. ITL.Core/ResourceGroup")],
    operation: Annotated[str, typer.Argument(help="create, get, update, delete or a provider action")],
    request: Annotated[str, typer.Option(help="The request as a JSON object.")] = "{}",
    priority: Annotated[int, typer.Option(min=0, max=9, help="0-9, higher runs first.")] = 5,
) -> None:
    """Submit one job and print its id."""
    from .compat import JobQueue
    from .rabbitmq.connectivity import check_broker

    settings = _settings("provider-jobs-submit")
    namespace, _, resource_type = provider.partition("/")
    try:
        body: Any = json.loads(request)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--request is not JSON: {exc}") from None
    check_broker(settings.broker_url)
    queue = JobQueue(settings=settings)
    try:
        job_id = queue.submit(
            provider_namespace=namespace,
            resource_type=resource_type,
            operation=operation,
            request=body,
            priority=priority,
        )
    finally:
        queue.close()
    typer.echo(job_id)


@app.command()
@one_line_errors
def demo(
    exit_when_done: Annotated[
        bool, typer.Option(help="Stop once the demo jobs are done and archived.")
    ] = False,
) -> None:
    """Run the system in one process (worker with demo providers, archiver, API) and
    submit one job per flow: success, success after retries, permanent failure,
    exhausted retries."""
    from .actors.provider_ops import actor_for
    from .compat import JobQueue
    from .rabbitmq.connectivity import check_broker

    settings, login_url = _demo_access(_settings("provider-jobs-demo"))
    check_broker(settings.broker_url)
    typer.echo(f"Console: {login_url}")
    queue = JobQueue(settings=settings)
    try:
        for fields in DEMO_JOBS:
            job_id = queue.submit(**fields)
            logger.info(
                "Submitted job %s: %s/%s %s",
                job_id,
                fields["provider_namespace"],
                fields["resource_type"],
                fields["operation"],
                extra={"job_id": job_id, "actor": actor_for(fields["operation"])},
            )
    finally:
        queue.close()

    def done() -> None:
        logger.info(
            "Demo jobs done. Dead letters are archived in %s: open the console at http://%s:%d/ui/, "
            "try `provider-jobs dlq groups`, `curl http://%s:%d/queue-stats`%s",
            mask_url_password(settings.archive_url),
            settings.api_host,
            settings.api_port,
            settings.api_host,
            settings.api_port,
            "" if exit_when_done else ". Ctrl-C stops.",
        )
        typer.echo(f"Console: {login_url}")

    _run_worker(settings, demo_registry(), until_idle=exit_when_done, archiver=True, api=True, on_idle=done)


def _demo_access(settings: Settings) -> tuple[Settings, str]:
    """The demo's settings with a token of its own for this run (unless one is configured),
    mutations audited as ``demo`` (unless an operator is named), and the console's login URL.

    The token rides in the URL's fragment, which browsers never send: the login page's
    script fills it in, so it stays out of every access log.
    """
    base = f"http://{settings.api_host}:{settings.api_port}/ui/login"
    if settings.api_token is not None:
        # The operator's own token is theirs to paste: it is not printed.
        return settings, base
    token = secrets.token_urlsafe(24)
    operator = identity.operator_name(settings.operator, default="demo")
    settings = Settings.from_env(api_token=token, operator=operator)
    return settings, f"{base}?name={quote(operator)}#token={token}"


queues_app = typer.Typer(help="The job's RabbitMQ queues.", no_args_is_help=True)
app.add_typer(queues_app, name="queues")


@queues_app.command("migrate")
@one_line_errors
def queues_migrate(
    to: Annotated[str, typer.Option(help="The queue type to migrate to: classic or quorum.")],
    retry_delay_ms: Annotated[
        list[int] | None,
        typer.Option(
            help="A further retry bucket to migrate (.retry.<ms>), such as backoff made; repeatable."
        ),
    ] = None,
) -> None:
    """Declare the job's queues again as TO, keeping every message (moved with confirms).

    Stop workers and producers first. Then set PROVIDER_JOBS_QUEUE_TYPE=TO everywhere.
    """
    from .actors.queue_migration import migrate_queues

    if to not in {"classic", "quorum"}:
        raise typer.BadParameter(f"--to {to!r}: expected classic or quorum")
    settings = _settings()
    report = migrate_queues(settings, to=to, retry_delays_ms=tuple(retry_delay_ms or ()))
    for line in report.lines():
        typer.echo(line)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: usage errors are one line on stderr, with click's exit code (2).

    Args:
        argv: The arguments; default ``sys.argv[1:]``.
    """
    try:
        code = app(args=None if argv is None else list(argv), standalone_mode=False)
    except typer.TyperException as exc:
        # Typer's (vendored click's) usage errors derive from TyperException.
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message(), err=True)
        else:
            # Bad usage: one line naming the problem, not a framed panel and a usage block.
            typer.echo(f"provider-jobs: {' '.join(exc.format_message().split())}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("provider-jobs: aborted", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
