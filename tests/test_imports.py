"""Importing any module of the package reads no setting, opens no socket and sets no global broker;
only the entry module of Dramatiq's CLI, ``provider_jobs.worker``, does."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import provider_jobs

#: Made to be an entry point: importing it builds the broker and makes it Dramatiq's global one.
ENTRY_MODULE = "provider_jobs.worker"

#: Imports each module named on the command line in a fresh interpreter and reports what that did.
IMPORTER = """
import importlib, json, os, sys, sysconfig

sockets, settings_read = [], set()

def audit(event, args):
    if event in {"socket.__new__", "socket.connect", "socket.bind"}:
        sockets.append(event)

sys.addaudithook(audit)
environ_class = type(os.environ)
getitem = environ_class.__getitem__
stdlib = sysconfig.get_paths()["stdlib"]

def recording_getitem(self, key):
    if isinstance(key, str) and key.startswith("PROVIDER_JOBS_"):
        frame = sys._getframe(1)
        while frame.f_code.co_filename in {"<frozen _collections_abc>", "<frozen os>", os.__file__}:
            frame = frame.f_back
        # The standard library's own copies of the environment (wsgiref's, at import) read no setting.
        asker = frame.f_code.co_filename
        if not asker.startswith(stdlib) or "-packages" in asker:
            settings_read.add(key)
    return getitem(self, key)

environ_class.__getitem__ = recording_getitem

for name in sys.argv[1:]:
    importlib.import_module(name)

import dramatiq.broker

print(json.dumps({
    "global_broker": repr(dramatiq.broker.global_broker),
    "sockets": sockets,
    "settings_read": sorted(settings_read),
}))
"""


def _modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.walk_packages(provider_jobs.__path__, prefix="provider_jobs.")
        if info.name != ENTRY_MODULE
    )


def _import_in_a_fresh_interpreter(names: list[str]) -> dict[str, object]:
    # A variable that Settings.from_env() would read: a module reading settings at import shows up.
    env = {**os.environ, "PROVIDER_JOBS_QUEUE_NAME": "import.canary"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORTER, *names],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_the_walk_finds_the_modules_of_every_room() -> None:
    modules = set(_modules())

    assert {"provider_jobs.actors", "provider_jobs.actors.broker", "provider_jobs.cli"} <= modules
    assert {"provider_jobs.dlq.archive.store", "provider_jobs.api.app", "provider_jobs.console"} <= modules
    assert ENTRY_MODULE not in modules


def test_importing_every_module_sets_no_broker_opens_no_socket_and_reads_no_setting() -> None:
    report = _import_in_a_fresh_interpreter(_modules())

    assert report == {"global_broker": "None", "sockets": [], "settings_read": []}


def test_importing_the_dramatiq_entry_module_reads_the_settings_and_sets_the_global_broker() -> None:
    report = _import_in_a_fresh_interpreter([ENTRY_MODULE])

    assert report["global_broker"].startswith("<provider_jobs.actors.broker._ProviderBroker")  # type: ignore[union-attr]
    assert "PROVIDER_JOBS_QUEUE_NAME" in report["settings_read"]  # type: ignore[operator]
    assert report["sockets"] == []
