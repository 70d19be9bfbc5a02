"""The README's settings table, generated from the fields of ``provider_jobs.settings.Settings``.

python scripts/settings_table.py           # print the table
python scripts/settings_table.py --write   # replace the table in README.md (make settings-table)
python scripts/settings_table.py --check   # exit 1 when README.md's table is not the generated one
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provider_jobs.settings import Settings, allowed_values

README = Path(__file__).resolve().parents[1] / "README.md"
#: The generated table sits between these two lines of README.md.
BEGIN = "<!-- settings table: generated from provider_jobs.settings by `make settings-table` -->"
END = "<!-- end of settings table -->"


def default_text(value: Any, shown: str) -> str:
    """A default as the table shows it: ``(none)`` when unset, code for text."""
    if shown:
        return shown
    if value is None or value in ("", (), {}) or (isinstance(value, Mapping) and not value):
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`"


def table() -> str:
    """One row per setting: its variable (less ``PROVIDER_JOBS_``), default, allowed values and meaning."""
    rows = ["| variable | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        cells = (
            f"`{name.upper()}`",
            default_text(info.default, str(extra.get("shown", ""))),
            allowed_values(name),
            info.description or "",
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def readme_with(text: str, generated: str) -> str:
    """``text`` (README.md) with the table between the markers replaced by ``generated``."""
    head, begin, rest = text.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"the README has no {BEGIN!r} ... {END!r} block")
    return f"{head}{BEGIN}\n{generated}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the table in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 when README.md's table is stale")
    parser.add_argument("--readme", type=Path, default=README, help="the README to write or check")
    args = parser.parse_args()
    generated = table()
    if not (args.write or args.check):
        print(generated)
        return 0
    current = args.readme.read_text(encoding="utf-8")
    wanted = readme_with(current, generated)
    if args.write:
        args.readme.write_text(wanted, encoding="utf-8")
        return 0
    if wanted != current:
        print(
            f"{args.readme}: its settings table is not generated from the model: run `make settings-table`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
