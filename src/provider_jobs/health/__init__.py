"""Provider health across processes: the health stream, the provider directory, and the
worker's side of both (breakers shared, providers announced)."""

from __future__ import annotations

from .directory import ProviderDirectory, ProviderEntry, read_directory
from .stream import HealthFollower, HealthStream, stream_name
from .sync import HealthSync

__all__ = [
    "HealthFollower",
    "HealthStream",
    "HealthSync",
    "ProviderDirectory",
    "ProviderEntry",
    "read_directory",
    "stream_name",
]
