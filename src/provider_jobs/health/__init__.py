"""Provider health across processes: the health stream, the provider directory, and the
worker's side of both (breakers shared, providers announced), and the watch a replay
waits on while a provider is down."""

from __future__ import annotations

from .directory import ProviderDirectory, ProviderEntry, read_directory
from .stream import HealthFollower, HealthStream, stream_name
from .sync import HealthSync
from .watch import BreakerWatch, Pause, follow_breakers

__all__ = [
    "BreakerWatch",
    "HealthFollower",
    "HealthStream",
    "HealthSync",
    "Pause",
    "ProviderDirectory",
    "ProviderEntry",
    "follow_breakers",
    "read_directory",
    "stream_name",
]
