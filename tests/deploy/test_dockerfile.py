"""The Dockerfile: slim base, non-root user, one image whose command picks the role."""

from __future__ import annotations

import re

from deploy_support import ROOT


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_every_stage_starts_from_a_slim_python_image() -> None:
    bases = [args.split()[0] for op, args in _instructions() if op == "FROM"]

    assert bases
    assert all(re.fullmatch(r"python:3\.1[1-9]-slim", base) for base in bases), bases


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [args for op, args in _instructions() if op == "USER"]

    assert users, "no USER instruction: the image would run as root"
    assert users[-1].split(":")[0] not in {"0", "root"}


def test_the_default_command_is_the_dramatiq_worker_of_our_actors() -> None:
    (cmd,) = [args for op, args in _instructions() if op == "CMD"]

    assert cmd.startswith('["dramatiq", "provider_jobs.worker"')
