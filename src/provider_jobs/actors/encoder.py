"""OrjsonEncoder: Dramatiq's JSON message encoding, through orjson, refusing what is not a message."""

from __future__ import annotations

from typing import Any

from dramatiq.encoder import JSONEncoder
from dramatiq.errors import DecodeError

from ..envelope import read_message
from ..json_bodies import write_json

__all__ = ["OrjsonEncoder"]


class OrjsonEncoder(JSONEncoder):
    """Dramatiq's :class:`~dramatiq.encoder.JSONEncoder`, encoding and decoding with orjson.

    Encoding a job's message costs a tenth of ``json.dumps``, and reading one
    a third of ``json.loads``, on every send, every delivery and every retry.
    The JSON means the same: compact, keys in insertion order, non-string keys
    written as strings, non-ASCII written as UTF-8 instead of ``\\u`` escapes.
    What orjson refuses (integers beyond 64 bits, types it does not know)
    goes to the stdlib, which raises ``TypeError`` for what Dramatiq's encoder
    refuses; what it cannot read (``NaN`` tokens, lone surrogates) or would
    read differently (integers beyond 64 bits, which it makes floats) is read
    by the stdlib, so every body Dramatiq's encoder wrote reads as before; a
    message holding a NaN or an infinity, which orjson would write as ``null``,
    is written by the stdlib too.

    It is a *message* encoder: :meth:`decode` raises ``DecodeError``, naming
    what is wrong, for a body that is not a
    :class:`~provider_jobs.envelope.MessageEnvelope` (Dramatiq's worker trusts
    every field's type). Dramatiq's consumer nacks that delivery, RabbitMQ
    moves it to ``<queue>.XQ``, and the archiver, reading it the same way,
    archives it as ``undecodable`` with the same reason. A result backend
    needs an encoder of its own (``dramatiq.JSONEncoder()``).
    """

    def encode(self, data: Any) -> bytes:
        return write_json(data)

    def decode(self, data: bytes) -> Any:
        message, problem = read_message(data)
        if problem is not None:
            # The reason only, never the body: Dramatiq logs this, and a body may be megabytes.
            raise DecodeError(problem, data, ValueError(problem))  # type: ignore[no-untyped-call]
        return message
