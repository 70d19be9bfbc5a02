"""The package as another service gets it: sdist and wheel built, the wheel installed in a fresh venv.

Run alone with ``pytest -m packaging``. The wheel's dependencies come from the
package index pip is configured with here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    # Nothing of this checkout or of the test venv may leak into the fresh one.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    dist = base / "dist"
    _checked(_run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=base, env=env))
    (sdist,) = dist.glob("provider_jobs-*.tar.gz")
    (wheel,) = dist.glob("provider_jobs-*.whl")

    venv = base / "venv"
    _checked(_run([sys.executable, "-m", "venv", venv], cwd=base, env=env))
    venv_python = venv / "bin" / "python"
    _checked(_run([venv_python, "-m", "pip", "install", "--quiet", wheel], cwd=base, env=env))

    workdir = base / "user"
    workdir.mkdir()
    return Installed(sdist, wheel, venv_python, venv / "bin", workdir, env)


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


def test_the_installed_cli_answers_help(installed: Installed) -> None:
    result = _checked(
        _run([installed.venv_bin / "provider-jobs", "--help"], cwd=installed.workdir, env=installed.env)
    )

    assert "Usage: provider-jobs" in result.stdout
    for command in ("worker", "archiver", "api", "submit", "dlq"):
        assert command in result.stdout


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
