"""Interleaved runs (A B A B ...), medians and ratios against the baseline, a table and JSON."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: One run of one variant: returns the measured value (for example messages per second).
Run = Callable[[], float]


@dataclass
class Variant:
    name: str
    run: Run
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass
class Result:
    workload: str
    unit: str
    higher_is_better: bool
    baseline: str
    variants: dict[str, list[float]]
    medians: dict[str, float]
    ratios: dict[str, float]
    target: str


def interleave(
    workload: str,
    variants: Sequence[Variant],
    *,
    rounds: int,
    unit: str,
    higher_is_better: bool = True,
    target: str = "",
) -> Result:
    """Run every variant once per round, in turn; the first variant is the baseline."""
    for round_no in range(rounds):
        for variant in variants:
            value = variant.run()
            variant.values.append(value)
            print(
                f"  {workload} round {round_no + 1}/{rounds} {variant.name}: {value:,.1f} {unit}", flush=True
            )
    baseline = variants[0]
    ratios = {
        v.name: (v.median / baseline.median if higher_is_better else baseline.median / v.median)
        for v in variants
    }
    return Result(
        workload=workload,
        unit=unit,
        higher_is_better=higher_is_better,
        baseline=baseline.name,
        variants={v.name: v.values for v in variants},
        medians={v.name: v.median for v in variants},
        ratios=ratios,
        target=target,
    )


def table(results: Sequence[Result]) -> str:
    """A Markdown table: median / min / max per variant and its ratio to the baseline (>1 is better)."""
    lines = [
        "| workload | variant | median | min | max | unit | ratio vs baseline | target |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for result in results:
        for name, values in result.variants.items():
            lines.append(
                f"| {result.workload} | {name} | {statistics.median(values):,.1f} | {min(values):,.1f} | "
                f"{max(values):,.1f} | {result.unit} | {result.ratios[name]:.2f}x | "
                f"{result.target if name != result.baseline else '(baseline)'} |"
            )
    return "\n".join(lines)


def save(results: Sequence[Result], path: Path) -> None:
    """Write the results and the machine they ran on as JSON."""
    path.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
