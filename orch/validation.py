"""Argument checks the controllers share, beyond the pure validators of ``orch.model``.

Every controller method checks its arguments before any actor is asked, raising
``Invalid`` naming the field, so nothing is half-applied. The checks of ids, names
and numbers belong to the model (``orch.model.validate_*``); these are the ones about
the shape of what a caller hands in: JSON documents, flags, enums and lock requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, TypeVar

import msgspec

from orch.errors import Invalid
from orch.model import MAX_RESOURCES_PER_REQUEST, LockMode, validate_id

#: The largest task payload or result, encoded as JSON.
MAX_PAYLOAD_BYTES = 1024 * 1024

E = TypeVar("E", bound=Enum)


def json_copy(field_name: str, value: Any, max_bytes: int) -> Any:
    """A deep copy of ``value`` that is proven JSON-serialisable and small enough.

    A copy, so that a caller changing its dict afterwards cannot change what was
    stored; proven, so that the store never meets a value it cannot encode.
    """
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError, OverflowError) as exc:
        raise Invalid(field_name, f"must be JSON-serialisable ({exc})") from None
    except RecursionError:
        raise Invalid(field_name, "is nested too deeply") from None
    if len(encoded) > max_bytes:
        raise Invalid(field_name, f"is {len(encoded)} bytes; the limit is {max_bytes}")
    return msgspec.json.decode(encoded)


def validate_bool(field_name: str, value: object) -> bool:
    """``value`` if it is a real bool: ``1`` or ``"false"`` would be read the wrong way."""
    if not isinstance(value, bool):
        raise Invalid(field_name, "must be true or false")
    return value


def validate_mapping(field_name: str, value: object) -> Mapping[str, Any]:
    """``value`` if it is a mapping (a JSON object); a list or None would fail later."""
    if not isinstance(value, Mapping):
        raise Invalid(field_name, "must be an object")
    return value


def validate_wait(field_name: str, value: object, maximum: float) -> float:
    """A wait in seconds, from 0 to ``maximum``: waits park a thread, so they are bounded."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= maximum:
        raise Invalid(field_name, f"must be between 0 and {maximum:g} seconds")
    return float(value)


def parse_enum(enum_type: type[E], field_name: str, value: object) -> E:
    """The member of ``enum_type`` named by ``value``, or ``Invalid`` listing the choices."""
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(str(m) for m in enum_type)
        raise Invalid(field_name, f"must be one of {choices}; got {value!r}") from None


def parse_lock_requests(resources: object) -> list[tuple[str, LockMode]]:
    """``resources`` as checked ``(resource, LockMode)`` pairs, or ``Invalid("resources")``.

    Unpacking blindly would raise a bare ``ValueError``/``TypeError`` for a dict, None
    or a 3-tuple (and read a 2-character string as a pair); every such shape is told
    apart here, naming the field and the item, before any actor is asked.
    """
    shape = "a list of (resource, mode) pairs, e.g. [('db', 'exclusive'), ('cache', 'shared')]"
    if isinstance(resources, str | bytes | Mapping) or not isinstance(resources, Iterable):
        raise Invalid("resources", f"must be {shape}; got {type(resources).__name__}")
    parsed: list[tuple[str, LockMode]] = []
    for i, item in enumerate(resources):
        if len(parsed) == MAX_RESOURCES_PER_REQUEST:
            raise Invalid("resources", f"at most {MAX_RESOURCES_PER_REQUEST} per request")
        if not isinstance(item, tuple | list) or len(item) != 2:
            got = f"{len(item)} items" if isinstance(item, tuple | list) else type(item).__name__
            raise Invalid("resources", f"item {i} must be a (resource, mode) pair; got {got}")
        try:
            parsed.append((validate_id("resource", item[0]), LockMode.parse(item[1])))
        except Invalid as exc:
            raise Invalid("resources", f"item {i}: {exc.message}") from None
    if not parsed:
        raise Invalid("resources", "name at least one resource")
    if len({r for r, _ in parsed}) != len(parsed):
        raise Invalid("resources", "lists the same resource twice")
    return parsed
