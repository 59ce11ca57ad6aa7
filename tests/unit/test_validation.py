"""orch/validation.py: the argument checks the controllers share."""

from __future__ import annotations

import pytest

from orch.errors import Invalid
from orch.model import LockMode, TaskState
from orch.validation import (
    json_copy,
    parse_enum,
    parse_lock_requests,
    validate_bool,
    validate_mapping,
    validate_wait,
)


def field_of(call) -> str:
    with pytest.raises(Invalid) as info:
        call()
    return info.value.field


def test_json_copy_is_a_deep_copy_proven_serialisable_and_small():
    value = {"a": [1, {"b": 2}]}
    copy = json_copy("payload", value, 100)
    assert copy == value and copy["a"] is not value["a"]
    assert field_of(lambda: json_copy("payload", {"x": object()}, 100)) == "payload"
    assert field_of(lambda: json_copy("result", "x" * 100, 100)) == "result"
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(Invalid, match="nested too deeply"):
        json_copy("payload", nested, 10**9)


def test_flags_mappings_and_waits_take_only_their_own_type():
    assert validate_bool("force", False) is False
    assert field_of(lambda: validate_bool("force", 0)) == "force"
    assert validate_mapping("config", {"a": 1}) == {"a": 1}
    assert field_of(lambda: validate_mapping("config", [("a", 1)])) == "config"
    assert validate_wait("wait_s", 2, 30) == 2.0
    for bad in (-0.1, 31, True, "1", None):
        assert field_of(lambda bad=bad: validate_wait("wait_s", bad, 30)) == "wait_s"


def test_parse_enum_lists_the_choices():
    assert parse_enum(TaskState, "state", "pending") is TaskState.PENDING
    with pytest.raises(Invalid, match="must be one of pending, assigned") as info:
        parse_enum(TaskState, "state", "sleepy")
    assert info.value.field == "state"


def test_lock_requests_are_pairs_each_resource_once():
    assert parse_lock_requests([("db", "exclusive"), ["cache", "shared"]]) == [
        ("db", LockMode.EXCLUSIVE),
        ("cache", LockMode.SHARED),
    ]
    with pytest.raises(Invalid, match=r"item 1 must be a .* pair; got 3 items"):
        parse_lock_requests([("db", "exclusive"), ("a", "b", "c")])
    with pytest.raises(Invalid, match="item 0: mode"):
        parse_lock_requests([("db", "sideways")])
