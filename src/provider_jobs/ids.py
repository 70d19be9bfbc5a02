"""new_uuid4 / new_uuid4_hex: random (version 4) UUIDs, a few hundred per read of OS randomness."""

from __future__ import annotations

import os
import threading

__all__ = ["new_uuid4", "new_uuid4_hex"]

#: Ids made at a time from one read of OS randomness (16 bytes each).
_IDS_PER_READ = 256
#: The variant nibble ``10xx`` for each random hex digit.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
_pool = threading.local()


def _uuid4_hexes(count: int) -> list[str]:
    """``count`` version 4 UUIDs as 32 hex digits, from one ``os.urandom`` call."""
    digits = os.urandom(16 * count).hex()
    # 122 random bits each: the version nibble is 4, the variant's two high bits are 10.
    return [
        f"{h[:12]}4{h[13:16]}{_VARIANT[h[16]]}{h[17:32]}"
        for h in (digits[i : i + 32] for i in range(0, 32 * count, 32))
    ]


def new_uuid4_hex() -> str:
    """A random UUID as ``uuid.uuid4().hex`` makes it, from a pool.

    ``uuid.uuid4()`` reads the OS once per id (3 µs, and a release of the GIL
    that can cost a thread switch interval while other threads run); these are
    made a few hundred at a time, per thread and per process (a forked child
    starts with no pool, so it never reuses its parent's ids).
    """
    ids: list[str] | None = getattr(_pool, "ids", None)
    if not ids:
        ids = _pool.ids = _uuid4_hexes(_IDS_PER_READ)
    return ids.pop()


def _forget_pool() -> None:
    # Only the forking thread lives on in the child; threads it starts get pools of their own.
    # Checking os.getpid() per id instead cost a system call each: glibc no longer caches it.
    _pool.__dict__.pop("ids", None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def new_uuid4() -> str:
    """A random UUID as ``str(uuid.uuid4())`` makes it (Dramatiq's message ids), from the pool."""
    h = new_uuid4_hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
