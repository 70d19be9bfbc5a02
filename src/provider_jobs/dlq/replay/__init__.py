"""Replay: send archived dead letters back to their queue, each exactly once, paced if asked."""

from __future__ import annotations

from .message import merge_patch
from .replayer import Replayer
from .report import ReplayOutcome, ReplayPlan, ReplayReport

__all__ = ["ReplayOutcome", "ReplayPlan", "ReplayReport", "Replayer", "merge_patch"]
