"""Providers configured outside code: ``PROVIDER_JOBS_PROVIDERS`` and a providers file."""

from __future__ import annotations

import importlib
import json
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .base import Provider
from .registry import ProviderRegistry

__all__ = ["load_providers", "parse_providers"]


def parse_providers(spec: str) -> list[dict[str, Any]]:
    """Entries from ``Namespace/Type=http://url;Other/Type=http://url``.

    Raises:
        ConfigurationError: An entry is not ``Namespace/Type=URL``.
    """
    entries = []
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        key, sep, url = item.partition("=")
        namespace, slash, resource_type = key.strip().partition("/")
        if not (sep and slash and namespace and resource_type and url.strip()):
            raise ConfigurationError(
                f"PROVIDER_JOBS_PROVIDERS entry {item!r} is not allowed: expected Namespace/Type=http://base-url"
            )
        entries.append(
            {"namespace": namespace, "resource_type": resource_type, "kind": "http", "url": url.strip()}
        )
    return entries


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except FileNotFoundError:
        raise ConfigurationError(f"PROVIDER_JOBS_PROVIDERS_FILE={str(path)!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"PROVIDER_JOBS_PROVIDERS_FILE={str(path)!r} cannot be read: {exc}"
        ) from None
    providers = data.get("providers") if isinstance(data, dict) else None
    if not isinstance(providers, list):
        raise ConfigurationError(
            f"PROVIDER_JOBS_PROVIDERS_FILE={str(path)!r} is not allowed: "
            "expected a top-level 'providers' list"
        )
    return providers


def _build(entry: dict[str, Any]) -> Provider:
    kind = entry.get("kind", "http")
    if kind == "http":
        from .http import HttpProvider

        if not entry.get("url"):
            raise ConfigurationError(f"provider entry {entry!r} is not allowed: an http provider needs 'url'")
        name = f"{entry.get('namespace')}/{entry.get('resource_type')}"
        try:
            timeout_s = float(entry.get("timeout_s", 30.0))
            connect_timeout_s = float(entry.get("connect_timeout_s", 5.0))
            headers = {str(k): str(v) for k, v in dict(entry.get("headers") or {}).items()}
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"provider entry {name} is not allowed: "
                f"timeout_s and connect_timeout_s must be numbers, headers a table ({exc})"
            ) from None
        options = {}
        if "idempotency_header" in entry:
            # TOML has no null: false turns the header off there, as null does in JSON.
            header = entry["idempotency_header"]
            options["idempotency_header"] = None if header is False else header
        try:
            return HttpProvider(
                str(entry["url"]),
                timeout_s=timeout_s,
                connect_timeout_s=connect_timeout_s,
                headers=headers,
                **options,
            )
        except ValueError as exc:
            raise ConfigurationError(f"provider entry {name}: {exc}") from None
    if kind == "python":
        target = str(entry.get("target", ""))
        module_name, _, attribute = target.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(
                f"provider entry target={target!r} is not allowed: "
                f"expected an importable module:attribute ({exc})"
            ) from None
        provider = obj() if isinstance(obj, type) else obj
        if not callable(getattr(provider, "execute", None)):
            raise ConfigurationError(f"provider entry target={target!r} is not a provider: no execute(job)")
        return provider  # type: ignore[no-any-return]
    raise ConfigurationError(f"provider entry kind={kind!r} is not allowed: expected http or python")


def load_providers(registry: ProviderRegistry, *, spec: str = "", path: str | None = None) -> list[str]:
    """Register the providers named in ``spec`` and in the file at ``path``.

    Args:
        registry: Where to register them.
        spec: ``Namespace/Type=URL`` pairs separated by ``;``.
        path: A TOML or JSON file with a ``providers`` list of tables with
            ``namespace``, ``resource_type``, ``kind`` (``http`` or ``python``)
            and ``url`` / ``timeout_s`` / ``connect_timeout_s`` / ``headers`` /
            ``idempotency_header`` (a header name, or ``false`` to send none)
            or ``target`` (``module:attribute``).

    Returns:
        The ``namespace/resource_type`` keys registered.

    Raises:
        ConfigurationError: The spec or file is malformed.
    """
    entries = parse_providers(spec) + (_read_file(Path(path)) if path else [])
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or not entry.get("namespace") or not entry.get("resource_type"):
            raise ConfigurationError(
                f"provider entry {entry!r} is not allowed: it needs 'namespace' and 'resource_type'"
            )
        registry.register(entry["namespace"], entry["resource_type"], _build(entry))
        keys.append(registry.key(entry["namespace"], entry["resource_type"]))
    return keys
