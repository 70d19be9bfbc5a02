"""Providers: the registry, in-process providers and HTTP providers."""

from __future__ import annotations

from .base import FunctionProvider, InProcessProvider, OperationHandler, Provider
from .config import load_providers, parse_providers
from .http import HttpProvider, parse_retry_after
from .registry import ProviderRegistry

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
