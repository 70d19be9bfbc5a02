"""A service that imports our middleware and submits jobs keeps its process as it had it:
garbage collector, sys.modules, structlog and logging configuration."""

from __future__ import annotations

import json
import subprocess
import sys

from provider_jobs.settings import Settings

HOST = """
import gc, json, logging, sys
import structlog

logging.basicConfig(level=logging.WARNING, format="host %(message)s")
structlog.configure(processors=[structlog.processors.JSONRenderer()], cache_logger_on_first_use=False)
config, modules = dict(structlog.get_config()), dict(sys.modules)
handlers, level = list(logging.getLogger().handlers), logging.getLogger().level

from provider_jobs.middleware import ClassifiedRetries, ErrorClassifier  # noqa: F401
from provider_jobs.compat import JobQueue
from provider_jobs.settings import Settings

seen = []
def jobs():
    for n in range(3):
        seen.append(gc.isenabled())
        yield {"provider_namespace": "ITL.Core", "resource_type": "ResourceGroup", "operation": "create",
               "request": {"n": n}}

queue = JobQueue(settings=Settings(broker_url=sys.argv[1], queue_name=sys.argv[2]))
queue.submit_many(jobs())
queue.close()
print(json.dumps({
    "gc_during_submit": seen,
    "gc_after": gc.isenabled(),
    "modules_replaced_or_hidden": [n for n, m in modules.items() if sys.modules.get(n) is not m]
        + [n for n, m in sys.modules.items() if m is None],
    "structlog_config_kept": all(structlog.get_config()[k] is v for k, v in config.items()),
    "logging_kept": logging.getLogger().handlers == handlers and logging.getLogger().level == level,
    "rich_importable": __import__("importlib").util.find_spec("rich") is not None,
}))
"""


def test_importing_the_middleware_and_submitting_jobs_leaves_the_host_process_as_it_was(
    settings: Settings, amqp
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", HOST, settings.broker_url, settings.queue_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "gc_during_submit": [True, True, True],
        "gc_after": True,
        "modules_replaced_or_hidden": [],
        "structlog_config_kept": True,
        "logging_kept": True,
        "rich_importable": True,
    }
