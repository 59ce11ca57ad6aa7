"""Reading request bodies: size and media type first, then validation by msgspec."""

from __future__ import annotations

import re
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
    the routes that take no body refuse an oversized one too, before acting. The limit
    (``ORCH_HTTP_MAX_BODY_BYTES``) travels to ``read_body`` on the request's context.
    """

    def __init__(self, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._max_body_bytes = max_body_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.max_body_bytes = self._max_body_bytes
        length = req.content_length
        if length is not None and length > self._max_body_bytes:
            raise PayloadTooLarge(
                f"the body is {length} bytes; the limit is {self._max_body_bytes}"
            )


def read_body(req: falcon.Request, body_type: type[T]) -> T:
    """Decode and validate the body as ``body_type``; an empty body means ``{}``.

    The size is checked against ``Content-Length`` before anything is read, and the
    stream is read at most one byte past the limit otherwise (chunked bodies).
    """
    limit = getattr(req.context, "max_body_bytes", MAX_BODY_BYTES)
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the body is {length} bytes; the limit is {limit}")
    raw = req.bounded_stream.read(limit + 1) if length != 0 else b""
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    if not raw.strip():
        raw = b"{}"
    elif not _is_json(req.content_type):
        raise UnsupportedMediaType(
            f"bodies must be application/json, not {req.content_type!r}",
            accepted=["application/json"],
        )
    try:
        return decoder_for(body_type).decode(raw)
    except msgspec.ValidationError as exc:
        return _with_integral_floats(raw, body_type, exc)
    except msgspec.DecodeError as exc:
        raise invalid_body(exc) from None
    except RecursionError:
        raise Invalid("body", "is nested too deeply") from None


_INT_GOT_FLOAT = re.compile(r"Expected `int[^`]*`, got `float` - at `\$((?:\.\w+|\[\d+\])+)`")
_PATH_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")


def _with_integral_floats(raw: bytes, body_type: type[T], exc: msgspec.ValidationError) -> T:
    """Validate again with ``60.0`` read as ``60`` where the body's type wants an integer.

    JSON has one number type, and the JSON Schema of /openapi.json counts 60.0 as an
    integer, so a client (or a serialiser that writes every number as a float) may send
    it. Only the fields msgspec names as wanting an integer are converted, one by one;
    free-form values such as payloads keep their numbers exactly as sent.
    """
    data: Any = None
    for _ in range(len(raw)):
        match = _INT_GOT_FLOAT.fullmatch(str(exc))
        if match is None:
            break
        if data is None:
            data = msgspec.json.decode(raw)
        *parents, last = [name or int(index) for name, index in _PATH_STEP.findall(match.group(1))]
        container = data
        for step in parents:
            container = container[step]
        value = container[last]
        if not (isinstance(value, float) and value.is_integer()):
            break
        container[last] = int(value)
        try:
            return msgspec.convert(data, body_type)
        except msgspec.ValidationError as again:
            exc = again
    raise invalid_body(exc, raw) from None


def send(resp: falcon.Response, body: Any, status: int = 200) -> None:
    """Answer ``body`` as JSON."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = _encoder.encode(body)
