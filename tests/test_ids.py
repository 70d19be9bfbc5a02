"""Pooled random UUIDs: version 4, RFC 4122 variant, distinct, in the forms uuid4() gives."""

from __future__ import annotations

import os
import uuid

import pytest

from provider_jobs.ids import new_uuid4, new_uuid4_hex


def test_ids_are_distinct_version_4_uuids_in_uuid4s_text_forms() -> None:
    texts = [new_uuid4() for _ in range(5_000)]
    hexes = [new_uuid4_hex() for _ in range(5_000)]
    assert len(set(texts) | set(hexes)) == 10_000
    for text in texts:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    for h in hexes:
        parsed = uuid.UUID(h)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, h)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_its_parents_pool() -> None:
    new_uuid4()  # fill this process's pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, new_uuid4().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_id = os.read(read, 64).decode()
    assert child_id != new_uuid4()
    assert uuid.UUID(child_id).version == 4
