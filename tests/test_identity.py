"""The worker's id and the operator's name, each worked out in one place."""

from __future__ import annotations

import getpass
import os
import socket

from provider_jobs.identity import operator_name, worker_id


def test_a_configured_worker_id_is_used_as_it_is() -> None:
    assert worker_id("worker-7") == "worker-7"


def test_without_a_configured_worker_id_it_names_the_host_and_the_process() -> None:
    assert worker_id() == f"{socket.gethostname()}-{os.getpid()}"
    assert worker_id("") == worker_id(None)


def test_a_configured_operator_wins_over_the_callers_default() -> None:
    assert operator_name("alice", default="api") == "alice"


def test_without_a_configured_operator_the_callers_default_is_used() -> None:
    assert operator_name(None, default="api") == "api"


def test_without_either_the_operator_is_the_user_at_this_host() -> None:
    assert operator_name() == f"{getpass.getuser()}@{socket.gethostname()}"
