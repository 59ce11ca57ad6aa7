"""orch/store/codec.py: the stored shape of every record, and rows written long ago.

``OLD_ROWS`` are byte for byte what the codec wrote before its rows were msgspec
Structs (hand-written ``*_to_dict`` functions, captured from that code): a database
full of them must read back the same records, and the same records must still
encode to the same bytes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import fields, replace

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orch.model import (
    AgentConfig,
    AgentRecord,
    LockGrant,
    Task,
    TaskProgress,
    TaskSpec,
    TaskState,
)
from orch.store import SQLiteStore, codec
from tests.store.records import make_agent, make_grant, make_task

OLD_ROWS = {
    "agent": (
        b'{"agent_id":"a1","agent_type":"worker","capabilities":["gpu","py"],"state":"busy",'
        b'"config":{"version":3,"max_concurrent_tasks":4,"heartbeat_interval_s":2.5,'
        b'"task_timeout_s":90.0,"auto_restart":false,"resource_limits":{"cpu":2,"memory":'
        b'{"gb":4.5}},"settings":{"model":"x","tags":["a","b"]}},"metadata":{"host":"h1",'
        b'"nested":{"k":[1,2.5,null,true,"s"]}},"project_id":"p1","in_process":true,'
        b'"registered_at":1700000000.25,"restarts":2,"task_keys":["7","job-1"],'
        b'"last_error":"boom"}'
    ),
    "bare_agent": (
        b'{"agent_id":"b","agent_type":"t","capabilities":[],"state":"registered","config":'
        b'{"version":1,"max_concurrent_tasks":1,"heartbeat_interval_s":30.0,'
        b'"task_timeout_s":3600.0,"auto_restart":true,"resource_limits":{},"settings":{}},'
        b'"metadata":{},"project_id":null,"in_process":false,"registered_at":0.0,'
        b'"restarts":0,"task_keys":[],"last_error":null}'
    ),
    "task": (
        b'{"spec":{"task_id":7,"payload":{"n":1,"deep":{"list":[1,"two",3.5,null,false]}},'
        b'"priority":5,"agent_type":"worker","capabilities":["gpu","py"],"resources":'
        b'["db","disk"],"max_attempts":4,"timeout_s":30.0,"submitter":null},"seq":1,'
        b'"state":"running","attempts":2,"agent_id":"a1","created_at":1700000000.5,'
        b'"assigned_at":1700000001.0,"finished_at":null,"result":null,"error":null,'
        b'"fencing_tokens":{"db":3,"disk":9},"lease_deadline":1030.5,"retry_at":null,'
        b'"queued_at":1000.25}'
    ),
    "bare_task": (
        b'{"spec":{"task_id":"x","payload":{},"priority":0,"agent_type":null,"capabilities":'
        b'[],"resources":[],"max_attempts":3,"timeout_s":null,"submitter":null},"seq":0,'
        b'"state":"pending","attempts":0,"agent_id":null,"created_at":0.0,"assigned_at":null,'
        b'"finished_at":null,"result":null,"error":null,"fencing_tokens":{},'
        b'"lease_deadline":null,"retry_at":null,"queued_at":0.0}'
    ),
    "grant": (
        b'{"resource":"db","mode":"exclusive","agent_id":"a1","fencing_token":1,'
        b'"expires_at":1700000060.75,"deadline":1060.75,"task_key":"7"}'
    ),
}

OLD_RECORDS = {
    "agent": make_agent(),
    "bare_agent": AgentRecord("b", "t", frozenset()),
    "task": make_task(spec=replace(make_task().spec, submitter=None), progress=None),
    "bare_task": Task(TaskSpec(task_id="x", payload={}), seq=0),
    "grant": make_grant(task_key="7"),
}

ENCODE = {"agent": codec.encode_agent, "task": codec.encode_task, "grant": codec.encode_grant}
DECODE = {"agent": codec.decode_agent, "task": codec.decode_task, "grant": codec.decode_grant}


def kind(name: str) -> str:
    return name.removeprefix("bare_")


@pytest.mark.parametrize("name", sorted(OLD_ROWS))
def test_old_rows_read_back_and_records_still_encode_to_the_same_bytes(name):
    assert DECODE[kind(name)](OLD_ROWS[name]) == OLD_RECORDS[name]
    assert DECODE[kind(name)](OLD_ROWS[name].decode()) == OLD_RECORDS[name]  # TEXT columns
    assert ENCODE[kind(name)](OLD_RECORDS[name]) == OLD_ROWS[name]


def test_a_database_written_by_the_old_codec_opens_with_every_record(tmp_path):
    path = str(tmp_path / "old.db")
    SQLiteStore(path).close()  # the schema; the rows below are the old code's
    # A task row from before ``submitter`` existed, and ints where floats are kept.
    older = OLD_ROWS["task"].replace(b',"submitter":null', b"").replace(b"1000.25", b"1000")
    raw = sqlite3.connect(path, isolation_level=None)
    for agent_id, name in (("a1", "agent"), ("b", "bare_agent")):
        raw.execute("INSERT INTO agents VALUES (?, ?)", (agent_id, OLD_ROWS[name].decode()))
    for key, seq, data in (("x", 0, OLD_ROWS["bare_task"]), ("7", 1, older)):
        raw.execute("INSERT INTO tasks VALUES (?, ?, 'pending', 0, ?)", (key, seq, data.decode()))
    raw.execute("INSERT INTO grants VALUES ('db', 'a1', '7', ?)", (OLD_ROWS["grant"].decode(),))
    raw.close()

    store = SQLiteStore(path)
    try:
        assert store.load_agents() == [OLD_RECORDS["agent"], OLD_RECORDS["bare_agent"]]
        bare, task = store.load_tasks()
        assert bare == OLD_RECORDS["bare_task"]
        assert task == replace(OLD_RECORDS["task"], queued_at=1000.0)
        assert type(task.queued_at) is float and task.spec.submitter is None
        assert store.load_grants() == [OLD_RECORDS["grant"]]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("row", "record", "not_stored"),
    [
        (codec.AgentRow, AgentRecord, {"last_heartbeat"}),
        (codec.ConfigRow, AgentConfig, set()),
        (codec.TaskRow, Task, set()),
        (codec.SpecRow, TaskSpec, set()),
        (codec.GrantRow, LockGrant, set()),
        (codec.ProgressRow, TaskProgress, set()),
    ],
)
def test_each_row_holds_every_field_of_its_record_in_its_order(row, record, not_stored):
    # A field added to a record must be added to its row, or it would not be stored.
    names = [f.name for f in fields(record) if f.name not in not_stored]
    assert list(row.__struct_fields__) == names


def test_sets_are_written_sorted_so_a_record_always_has_the_same_bytes():
    one = make_agent(capabilities=frozenset(["b", "a", "c"]), task_keys=frozenset(["2", "1"]))
    other = make_agent(capabilities=frozenset(["c", "b", "a"]), task_keys=frozenset(["1", "2"]))
    assert codec.encode_agent(one) == codec.encode_agent(other)
    assert b'"capabilities":["a","b","c"]' in codec.encode_agent(one)


def test_the_heartbeat_reading_is_not_stored():
    raw = codec.encode_agent(make_agent(last_heartbeat=1234.5))
    assert b"last_heartbeat" not in raw
    assert codec.decode_agent(raw) == make_agent(last_heartbeat=0.0)


def test_free_form_values_come_back_as_json_types():
    task = make_task(result={"t": (1, 2), 3: "int key", "nan": float("nan")})
    assert codec.decode_task(codec.encode_task(task)).result == {
        "t": [1, 2],
        "3": "int key",
        "nan": None,
    }


@pytest.mark.parametrize(
    "row",
    [
        b'{"agent_id":"a1"}',  # fields missing
        OLD_ROWS["agent"].replace(b'"restarts":2', b'"restarts":"2"'),  # wrong type
        OLD_ROWS["agent"].replace(b'"state":"busy"', b'"state":"sleepy"'),  # no such state
        b"not json",
    ],
)
def test_a_row_that_is_not_a_record_is_an_error_not_half_a_record(row):
    with pytest.raises(msgspec.DecodeError):  # ValidationError is one
        codec.decode_agent(row)


def test_a_value_json_cannot_hold_is_a_type_error():
    with pytest.raises(TypeError):
        codec.encode_task(make_task(result=object()))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=50, deadline=None)
@given(
    task_id=st.integers(-(2**63), 2**63 - 1) | st.text(min_size=1, max_size=20),
    payload=st.dictionaries(st.text(), json_values, max_size=4),
    result=json_values,
    capabilities=st.frozensets(st.text(max_size=8), max_size=4),
    state=st.sampled_from(TaskState),
)
def test_any_json_task_round_trips_through_the_codec(task_id, payload, result, capabilities, state):
    spec = replace(make_task(task_id).spec, payload=payload, capabilities=capabilities)
    task = make_task(task_id, state=state, result=result, spec=spec)
    assert codec.decode_task(codec.encode_task(task)) == task


def test_a_tasks_progress_is_stored_with_it_and_a_task_without_keeps_its_old_bytes():
    task = make_task()
    assert task.progress is not None
    raw = codec.encode_task(task)
    assert b'"progress":{"message":"tests pass; writing docs","percent":62.5' in raw
    assert codec.decode_task(raw) == task
    bare = replace(task, progress=None)
    assert b"progress" not in codec.encode_task(bare)
    assert codec.decode_task(codec.encode_task(bare)) == bare
