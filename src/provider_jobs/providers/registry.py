"""ProviderRegistry: which provider serves which ``namespace/resource_type``."""

from __future__ import annotations

import threading

from ..errors import ProviderNotFound
from .base import Provider

__all__ = ["ProviderRegistry"]


class ProviderRegistry:
    """A thread-safe map of ``namespace/resource_type`` to provider.

    Providers may be registered and unregistered while workers run; a lookup
    sees the registry as it is at that moment.
    """

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(namespace: str, resource_type: str) -> str:
        return f"{namespace}/{resource_type}"

    def register(self, namespace: str, resource_type: str, provider: Provider) -> None:
        """Serve ``namespace/resource_type`` with ``provider``, replacing any previous one.

        Raises:
            TypeError: ``provider`` has no ``execute`` method.
        """
        if not callable(getattr(provider, "execute", None)):
            raise TypeError(f"{provider!r} is not a provider: it has no execute(job) method")
        with self._lock:
            self._providers[self.key(namespace, resource_type)] = provider

    def unregister(self, namespace: str, resource_type: str) -> Provider | None:
        """Stop serving ``namespace/resource_type``; returns the provider removed, if any."""
        with self._lock:
            return self._providers.pop(self.key(namespace, resource_type), None)

    def get(self, namespace: str, resource_type: str) -> Provider:
        """The provider for ``namespace/resource_type``.

        Raises:
            ProviderNotFound: None is registered (retryable: it may be deploying).
        """
        key = self.key(namespace, resource_type)
        with self._lock:
            provider = self._providers.get(key)
        if provider is None:
            raise ProviderNotFound(f"No provider found for {key}")
        return provider

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._providers

    def keys(self) -> list[str]:
        """Registered ``namespace/resource_type`` keys, sorted."""
        with self._lock:
            return sorted(self._providers)
