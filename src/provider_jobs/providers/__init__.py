"""Providers: the registry, in-process providers and HTTP providers.

``HttpProvider`` and ``parse_retry_after`` are imported on first use: httpx
costs a worker that has no HTTP provider a few MiB of memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import FunctionProvider, InProcessProvider, OperationHandler, Provider
from .config import load_providers, parse_providers
from .registry import ProviderRegistry

if TYPE_CHECKING:
    from .http import HttpProvider, parse_retry_after

__all__ = [
    "FunctionProvider",
    "HttpProvider",
    "InProcessProvider",
    "OperationHandler",
    "Provider",
    "ProviderRegistry",
    "load_providers",
    "parse_providers",
    "parse_retry_after",
]


def __getattr__(name: str) -> Any:
    if name in ("HttpProvider", "parse_retry_after"):
        from . import http

        return getattr(http, name)
    raise AttributeError(f"module 'provider_jobs.providers' has no attribute {name!r}")
