"""Redactor: what every view of stored data passes through, masked and capped.

The archive keeps a dead letter as it came (a replay needs the original
request); its views (the CLI, the API, log lines, triage webhooks) show it
through a :class:`Redactor`, which

- masks the value of every key that names a secret (``password``, ``token``,
  ``api_key``...; matched case-insensitively at any depth, ``-``, ``_``,
  ``.`` and spaces ignored, so ``X-Api-Key`` and ``apiKey`` match ``api_key``);
- masks secrets inside text: the password of a URL (``amqp://u:***@host``) and
  ``key=value``, ``key: value``, ``"key": "value"`` pairs of secret keys, as
  they appear in errors, tracebacks and raw bodies;
- caps what it renders: containers nested deeper than ``max_depth``, more than
  ``max_items`` entries, and text longer than ``max_chars`` are cut, and a
  marker says what was left out. A record nested a thousand levels deep is
  stored as it came; reading it never fails.

A leaf module: it imports nothing of ours, so that the Dramatiq middleware and
the logging set-up may use it too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

__all__ = ["DEFAULT_REDACT_KEYS", "MASK", "Redactor", "mask_url_password"]

#: Keys whose values are secrets unless ``PROVIDER_JOBS_REDACT_KEYS`` says otherwise.
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "authorization",
    "private_key",
    "client_secret",
    "access_key",
    "credentials",
    "cookie",
)
#: What a secret value is shown as. Not bracketed, so that no renderer reads it as markup.
MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s/@'\"]+(?=@)")
_SCHEME = re.compile(r"(?i)(?:bearer|basic|token|digest)\s+")


def mask_url_password(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL masked."""
    return _URL_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def _normalise(key: str) -> str:
    return re.sub(r"[\s_.\-]", "", key.lower())


class Redactor:
    """Masks secret values and caps the size of what a view renders.

    Args:
        keys: Key names whose values are secrets; a key matches when its
            normalised name (lower case, without ``_ - .`` and spaces) contains
            one of them. Default :data:`DEFAULT_REDACT_KEYS`.
        max_depth: Containers nested deeper than this are replaced by a marker. Default 32.
        max_items: Entries shown of one list or object. Default 1000.
        max_chars: Characters shown of one string. Default 65 536.

    Raises:
        ValueError: A limit is below 1.
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        max_depth: int = 32,
        max_items: int = 1000,
        max_chars: int = 65_536,
    ) -> None:
        if min(max_depth, max_items, max_chars) < 1:
            raise ValueError("max_depth, max_items and max_chars must be 1 or more")
        self.keys = tuple(dict.fromkeys(k for k in (_normalise(key) for key in keys) if k))
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_chars = max_chars
        self._pairs: re.Pattern[str] | None = None
        if self.keys:
            # In text a key may be written api_key, api-key, apiKey or API.KEY.
            words = "|".join(r"[_\-. ]?".join(map(re.escape, key)) for key in self.keys)
            self._pairs = re.compile(
                r"(?i)(?P<head>(?<![\w])\\?[\"']?[\w.\-]*?(?:" + words + r")[\w.\-]*\\?[\"']?\s*[:=]\s*)"
                r"(?P<value>\\?\"(?:[^\"\\]|\\.)*?\\?\"|\\?'(?:[^'\\]|\\.)*?\\?'"
                r"|(?:(?:bearer|basic|token|digest)\s+)?[^\s,;&'\"}\])]+)"
            )

    def is_secret(self, key: object) -> bool:
        """Whether ``key`` names a secret."""
        if not isinstance(key, str):
            return False
        name = _normalise(key)
        return any(word in name for word in self.keys)

    def text(self, text: str) -> str:
        """``text`` with URL passwords and secret ``key=value`` pairs masked (not capped)."""
        masked = mask_url_password(text)
        if self._pairs is None:
            return masked
        return self._pairs.sub(_mask_pair, masked)

    def view(self, value: Any, *, reveal: bool = False, omit: Iterable[str] = ()) -> Any:
        """A JSON-safe copy of ``value`` for a view: secrets masked, size capped.

        Args:
            value: Dicts, lists, tuples, strings, bytes (decoded lossily), numbers,
                dataclass instances (as objects of their fields); anything else is
                shown as its ``str``.
            reveal: Show secret values (an operator asked, with the token); caps still apply.
            omit: Top-level keys left out (a record's raw body on a list page).
        """
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if omit and isinstance(value, Mapping):
            skipped = set(omit)
            value = {k: v for k, v in value.items() if k not in skipped}
        return self._walk(value, 0, reveal)

    def _walk(self, value: Any, depth: int, reveal: bool) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            value = bytes(value).decode("utf-8", errors="replace")
        if isinstance(value, str):
            return self._string(value, reveal)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping | list | tuple | set | frozenset):
            if depth >= self.max_depth:
                return f"… nested deeper than {self.max_depth} levels: not shown"
            if isinstance(value, Mapping):
                shown: dict[str, Any] = {}
                for count, (key, item) in enumerate(value.items()):
                    if count == self.max_items:
                        shown["…"] = f"{len(value) - count} more keys not shown"
                        break
                    name = self._string(key if isinstance(key, str) else str(key), reveal)
                    if not reveal and item is not None and self.is_secret(key):
                        shown[name] = MASK
                    else:
                        shown[name] = self._walk(item, depth + 1, reveal)
                return shown
            items = list(value) if isinstance(value, set | frozenset) else value
            result = [self._walk(item, depth + 1, reveal) for item in items[: self.max_items]]
            if len(items) > self.max_items:
                result.append(f"… {len(items) - self.max_items} more items not shown")
            return result
        return self._string(str(value), reveal)

    def _string(self, text: str, reveal: bool) -> str:
        cut = len(text) - self.max_chars
        if cut > 0:
            text = f"{text[: self.max_chars]}… ({cut} more characters not shown)"
        return text if reveal else self.text(text)

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        """A structlog processor: masks (and caps) every value of the event dict."""
        for key, value in list(event_dict.items()):
            if key.startswith("_") or key == "exc_info":
                # structlog's own bookkeeping (_record, _from_structlog) is not rendered, and
                # exc_info is rendered (then masked) as ``exception``.
                continue
            if value is not None and self.is_secret(key):
                event_dict[key] = MASK
            elif isinstance(value, str):
                event_dict[key] = self._string(value, False)
            elif isinstance(value, Mapping | list | tuple):
                event_dict[key] = self._walk(value, 0, False)
        return event_dict


def _mask_pair(match: re.Match[str]) -> str:
    value = match["value"]
    quote = re.match(r"\\?[\"']", value)
    if quote:
        return f"{match['head']}{quote.group()}{MASK}{quote.group()}"
    scheme = _SCHEME.match(value)
    return f"{match['head']}{scheme.group() if scheme else ''}{MASK}"
