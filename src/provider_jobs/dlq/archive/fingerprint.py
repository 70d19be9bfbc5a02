"""Fingerprints: the key that groups dead letters by cause, over normalised error text."""

from __future__ import annotations

import functools
import hashlib
import re

__all__ = ["fingerprint", "normalise_error"]

_UUID = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")
_HEX_ID = re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?")
_SPACES = re.compile(r"\s+")


def normalise_error(text: str) -> str:
    """``text`` with ids, numbers and quoted values replaced, so that failures
    with the same cause read the same."""
    text = _UUID.sub("<id>", text)
    text = _QUOTED.sub("<value>", text)
    text = _HEX_ID.sub("<id>", text)
    text = _NUMBER.sub("<n>", text)
    return _SPACES.sub(" ", text).strip()


def fingerprint(
    *,
    category: str,
    provider_namespace: str | None,
    resource_type: str | None,
    operation: str | None,
    error: str,
) -> str:
    """A 16-hex-digit key grouping dead letters by cause: category, provider,
    resource type, operation and the normalised error text."""
    return _fingerprint(category, provider_namespace or "", resource_type or "", operation or "", error)


# A failure storm repeats a handful of errors thousands of times: normalise each once.
@functools.lru_cache(maxsize=4096)
def _fingerprint(
    category: str, provider_namespace: str, resource_type: str, operation: str, error: str
) -> str:
    key = "\x1f".join((category, provider_namespace, resource_type, operation, normalise_error(error)))
    return hashlib.sha256(key.encode()).hexdigest()[:16]
