"""Reading request bodies: size and media type first, then validation by msgspec."""

from __future__ import annotations

from typing import Any, TypeVar

import falcon
import msgspec

from orch.errors import Invalid
from orch.http.errors import PayloadTooLarge, UnsupportedMediaType, invalid_body
from orch.http.schemas import decoder_for

MAX_BODY_BYTES = 1024 * 1024

T = TypeVar("T", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True  # a client that sends no type gets the benefit of the doubt
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class BodyLimit:
    """Refuse any body over the limit by its ``Content-Length``, on every route.

    ``read_body`` checks again while reading (chunked bodies); this middleware makes
    the routes that take no body refuse an oversized one too, before acting.
    """

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"the body is {length} bytes; the limit is {MAX_BODY_BYTES}")


def read_body(req: falcon.Request, body_type: type[T]) -> T:
    """Decode and validate the body as ``body_type``; an empty body means ``{}``.

    The size is checked against ``Content-Length`` before anything is read, and the
    stream is read at most one byte past the limit otherwise (chunked bodies).
    """
    length = req.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is {length} bytes; the limit is {MAX_BODY_BYTES}")
    raw = req.bounded_stream.read(MAX_BODY_BYTES + 1) if length != 0 else b""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is over the limit of {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        raw = b"{}"
    elif not _is_json(req.content_type):
        raise UnsupportedMediaType(
            f"bodies must be application/json, not {req.content_type!r}",
            accepted=["application/json"],
        )
    try:
        return decoder_for(body_type).decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise invalid_body(exc) from None
    except RecursionError:
        raise Invalid("body", "is nested too deeply") from None


def send(resp: falcon.Response, body: Any, status: int = 200) -> None:
    """Answer ``body`` as JSON."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = _encoder.encode(body)
