"""The package as another service gets it: sdist and wheel built, the wheel installed in fresh venvs,
once bare (``pip install provider-jobs``) and once with every extra (``provider-jobs[all]``).

Run alone with ``pytest -m packaging``. The wheel's dependencies come from the
package index pip is configured with here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest

from support import take_dead_letters

ROOT = Path(__file__).resolve().parents[1]

#: Each step (build, venv, install) must end within this many seconds.
STEP_TIMEOUT_S = 300

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(3 * STEP_TIMEOUT_S)]


@dataclass(frozen=True)
class Installed:
    """What the module's one build and install left behind."""

    sdist: Path
    wheel: Path
    venv_python: Path
    venv_bin: Path
    workdir: Path
    env: dict[str, str]


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
    )


def _checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}\n{result.stdout}\n{result.stderr}"
    return result


@dataclass(frozen=True)
class Built:
    """The module's one build."""

    sdist: Path
    wheel: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("build")
    # Nothing of this checkout or of the test venv may leak into the fresh ones.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    dist = base / "dist"
    _checked(_run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=base, env=env))
    (sdist,) = dist.glob("provider_jobs-*.tar.gz")
    (wheel,) = dist.glob("provider_jobs-*.whl")
    return Built(sdist, wheel, env)


def _install(built: Built, base: Path, extras: str = "") -> Installed:
    venv = base / "venv"
    _checked(_run([sys.executable, "-m", "venv", venv], cwd=base, env=built.env))
    venv_python = venv / "bin" / "python"
    requirement = f"{built.wheel}{extras}"
    _checked(_run([venv_python, "-m", "pip", "install", "--quiet", requirement], cwd=base, env=built.env))
    workdir = base / "user"
    workdir.mkdir()
    return Installed(built.sdist, built.wheel, venv_python, venv / "bin", workdir, built.env)


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel installed without extras: what a service that reuses the middleware gets."""
    return _install(built, tmp_path_factory.mktemp("bare"))


@pytest.fixture(scope="module")
def installed_all(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel installed with every extra."""
    return _install(built, tmp_path_factory.mktemp("all"), "[all]")


def test_the_wheel_ships_types_licence_and_declares_apache_2(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(metadata_name).decode())
        (licence_name,) = (n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        licence = wheel.read(licence_name).decode()

    assert "provider_jobs/py.typed" in names
    assert metadata["License"] == "Apache-2.0"
    assert "Apache License\n                           Version 2.0, January 2004" in licence
    assert licence == (ROOT / "LICENSE").read_text()


def test_the_sdist_carries_the_licence_changelog_and_types(installed: Installed) -> None:
    with tarfile.open(installed.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}

    assert {"LICENSE", "CHANGELOG.md", "README.md", "src/provider_jobs/py.typed"} <= names


def test_the_cli_installed_with_every_extra_answers_help(installed_all: Installed) -> None:
    result = _checked(
        _run(
            [installed_all.venv_bin / "provider-jobs", "--help"],
            cwd=installed_all.workdir,
            env=installed_all.env,
        )
    )

    assert "Usage: provider-jobs" in result.stdout
    for command in ("worker", "archiver", "api", "submit", "dlq"):
        assert command in result.stdout


def test_the_cli_without_its_extra_is_one_line_naming_the_extra(installed: Installed) -> None:
    result = _run([installed.venv_bin / "provider-jobs", "--help"], cwd=installed.workdir, env=installed.env)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "provider-jobs: typer is not installed; it comes with an extra: pip install 'provider-jobs[cli]'\n"
    )


#: The top-level packages of the extras: a bare install has none of them.
EXTRAS_PACKAGES = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "itsdangerous",
    "typer",
    "rich",
    "opentelemetry",
)

#: A plain Dramatiq service with ClassifiedRetries in place of Retries; prints what it ran and imported.
SERVICE = """
import importlib.util, json, sys, time
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, ShutdownNotifications, TimeLimit
from provider_jobs.middleware import ClassifiedRetries

url, queue_name, extras_packages = sys.argv[1], sys.argv[2], sys.argv[3:]
retries = ClassifiedRetries(retry_delay_ms=20, max_retries=2, worker_id="billing-1")
broker = RabbitmqBroker(
    url=url,
    confirm_delivery=True,
    middleware=[AgeLimit(), TimeLimit(), ShutdownNotifications(), Callbacks(), Pipelines(), retries],
)
attempts = []

@dramatiq.actor(broker=broker, queue_name=queue_name)
def charge_card(order_id):
    attempts.append(order_id)
    raise ConnectionError(f"payment gateway reset the connection on attempt {len(attempts)}")

charge_card.send("order-17")
worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=20)
worker.start()
try:
    # Retries wait in a TTL queue that broker.join does not watch: wait for the last attempt first.
    deadline = time.monotonic() + 30
    while len(attempts) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    broker.join(queue_name, timeout=30_000)
    worker.join()
finally:
    worker.stop()
    broker.close()
print(json.dumps({
    "attempts": attempts,
    "imported": sorted(p for p in extras_packages if p in sys.modules),
    "installed": sorted(p for p in extras_packages if importlib.util.find_spec(p) is not None),
}))
"""


def test_a_plain_dramatiq_service_retries_and_dead_letters_with_the_bare_install(
    installed: Installed, rabbitmq_url: str, queue_name: str, amqp
) -> None:
    result = _checked(
        _run(
            [installed.venv_python, "-c", SERVICE, rabbitmq_url, queue_name, *EXTRAS_PACKAGES],
            cwd=installed.workdir,
            env=installed.env,
        )
    )
    [(properties, body)] = take_dead_letters(amqp, queue_name, 1)

    report = json.loads(result.stdout.strip().splitlines()[-1])
    dead = body["options"]["dead_letter"]
    assert report == {"attempts": ["order-17"] * 3, "imported": [], "installed": []}
    assert (dead["reason"], dead["category"], dead["attempts"]) == ("exhausted", "connection_error", 3)
    assert dead["error"] == "payment gateway reset the connection on attempt 3"
    assert properties.headers["x-provider-jobs-dead-letter"] == "exhausted"


def test_the_middleware_imports_from_the_installed_wheel(installed: Installed) -> None:
    code = (
        "import provider_jobs.middleware as m\n"
        "from provider_jobs.middleware import ClassifiedRetries\n"
        "print(m.__file__)\n"
        "print(ClassifiedRetries.__name__)\n"
    )

    result = _checked(_run([installed.venv_python, "-c", code], cwd=installed.workdir, env=installed.env))

    location, name = result.stdout.split()
    assert Path(location).is_relative_to(installed.venv_python.parent.parent)
    assert name == "ClassifiedRetries"


def test_a_users_mypy_sees_the_installed_types(installed: Installed) -> None:
    user_code = installed.workdir / "use_middleware.py"
    user_code.write_text(
        "from provider_jobs.middleware import ClassifiedRetries\n"
        "\n"
        "retries = ClassifiedRetries()\n"
        "wrong: int = retries\n"
    )

    result = _run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-executable",
            installed.venv_python,
            "--cache-dir",
            installed.workdir / ".mypy_cache",
            user_code.name,
        ],
        cwd=installed.workdir,
        env=installed.env,
    )

    # The one error is the planted one, which mypy can only see with the package's types.
    assert "py.typed" not in result.stdout, result.stdout
    assert 'expression has type "ClassifiedRetries", variable has type "int"' in result.stdout, result.stdout
    assert "Found 1 error in 1 file" in result.stdout, result.stdout


def test_the_worker_entry_and_the_producer_api_import_with_the_bare_install(installed: Installed) -> None:
    code = (
        "import sys\n"
        "import dramatiq.broker\n"
        "from provider_jobs.compat import JobQueue\n"
        "from provider_jobs.actors import build_broker, declare_provider_actors\n"
        "import provider_jobs.worker\n"
        "print(type(dramatiq.broker.global_broker).__name__)\n"
        f"print(sorted(p for p in {EXTRAS_PACKAGES!r} if p in sys.modules))\n"
    )

    result = _checked(_run([installed.venv_python, "-c", code], cwd=installed.workdir, env=installed.env))

    assert result.stdout.splitlines() == ["_ProviderBroker", "[]"]
