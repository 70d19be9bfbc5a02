"""Helpers of the deploy tests: where the artifacts are, which settings and metrics exist."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from provider_jobs.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "provider-jobs"
RULES = ROOT / "deploy" / "prometheus" / "provider-jobs.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "provider-jobs.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "provider-jobs.json"

#: Our metric names start with one of these.
METRIC_PREFIXES = ("worker_", "provider_jobs_")
_METRIC = re.compile(r"\b((?:worker|provider_jobs)_[a-z0-9_]+)\b")
_GROUPING = re.compile(r"\b(?:by|without)\s*\([^)]*\)")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def settings_variables() -> set[str]:
    """Every ``PROVIDER_JOBS_*`` variable :class:`Settings` reads."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def sample_names(*registries: CollectorRegistry) -> set[str]:
    """The names of the series the registries' metrics expose (``_total``, ``_bucket``...)."""
    return {
        family.name + suffix
        for registry in registries
        for family in registry.collect()
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def metric_names_in(text: str) -> set[str]:
    """Names of our metrics that a PromQL text refers to (labels in ``by (...)`` are not names)."""
    return set(_METRIC.findall(_GROUPING.sub("", text)))
