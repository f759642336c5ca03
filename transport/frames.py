"""The WebSocket frames the server writes (PROTOCOL.md "WebSocket"). Pure: bytes in, bytes out.

Encoded parts (a result, an event) are spliced in as they are, never decoded again.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import ApiError, encode_error

__all__ = ["error_frame", "event_frame", "notice_frame", "reply_frame"]


def reply_frame(reply_id: Any, result: bytes) -> bytes:
    """The answer to request ``reply_id``: ``result`` is its JSON, encoded."""
    return b'{"id":%s,"ok":true,"result":%s}' % (orjson.dumps(reply_id), result)


def error_frame(reply_id: Any, error: ApiError, request_id: str) -> bytes:
    """The failed answer to request ``reply_id``: the protocol's error object."""
    return b'{"id":%s,"ok":false,"error":%s}' % (orjson.dumps(reply_id), encode_error(error, request_id))


def event_frame(sid: str, event: bytes) -> bytes:
    """A push of ``event`` (encoded) to subscription ``sid`` (an id: no quoting needed)."""
    return b'{"op":"event","subscription":"%s","event":%s}' % (sid.encode(), event)


def notice_frame(op: str, fields: dict[str, Any]) -> bytes:
    """A frame the server sends on its own (not an answer), e.g. ``auth.expiring``."""
    return orjson.dumps({"op": op, **fields})
