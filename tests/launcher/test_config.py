"""orch/launcher/config.py: the file's fields, defaults, and one-line refusals."""

from __future__ import annotations

import pytest

from orch.launcher.config import LauncherConfigError, load_config, parse_config
from orch.supervision import RestartPolicy


def test_defaults_are_the_in_process_agents_and_instances_are_named_name_i():
    config = parse_config({"programs": {"worker": {"command": ["python", "w.py"]}}})
    program = config.programs["worker"]
    assert program.instances == 1 and program.agent_ids() == ["worker-1"]
    assert program.restart == RestartPolicy()
    assert program.agent_type == "implementation" and program.capabilities == ()
    assert program.max_concurrent_tasks == 1 and program.stop_grace_s == 10.0
    assert program.env == {} and program.cwd is None


def test_every_field_is_read(tmp_path):
    path = tmp_path / "agents.toml"
    path.write_text(
        f"""
[programs.coder]
command = ["python", "examples/worker.py"]
instances = 3
agent_type = "breakdown"
capabilities = ["code", "git"]
max_concurrent_tasks = 2
env = {{ MODEL = "big" }}
cwd = "{tmp_path}"
max_restarts = 7
restart_window_s = 30
backoff_initial_s = 0.5
backoff_max_s = 20
stop_grace_s = 3
log_max_bytes = 2048
log_backups = 2

[programs.reviewer]
command = ["reviewer"]
instances = 0
"""
    )
    config = load_config(str(path))
    coder = config.programs["coder"]
    assert coder.agent_ids() == ["coder-1", "coder-2", "coder-3"]
    assert coder.agent_type == "breakdown" and coder.capabilities == ("code", "git")
    assert coder.max_concurrent_tasks == 2 and coder.env == {"MODEL": "big"}
    assert coder.cwd == str(tmp_path)
    assert coder.restart == RestartPolicy(7, 30.0, 0.5, 20.0)
    assert (coder.stop_grace_s, coder.log_max_bytes, coder.log_backups) == (3.0, 2048, 2)
    assert list(config.instances()) == ["coder-1", "coder-2", "coder-3"]


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({}, "programs.w.command"),
        ({"command": "python w.py"}, "programs.w.command"),
        ({"command": []}, "programs.w.command"),
        ({"command": ["python", ""]}, "programs.w.command"),
        ({"command": ["x"], "instances": "2"}, "programs.w.instances"),
        ({"command": ["x"], "instances": -1}, "programs.w.instances"),
        ({"command": ["x"], "instances": True}, "programs.w.instances"),
        ({"command": ["x"], "agent_type": "a b"}, "programs.w.agent_type"),
        ({"command": ["x"], "capabilities": "code"}, "programs.w.capabilities"),
        ({"command": ["x"], "max_concurrent_tasks": 0}, "programs.w.max_concurrent_tasks"),
        ({"command": ["x"], "env": {"A": 1}}, "programs.w.env.A"),
        ({"command": ["x"], "env": {"ORCH_AGENT_TOKEN": "x"}}, "programs.w.env.ORCH_AGENT_TOKEN"),
        ({"command": ["x"], "cwd": "/no/such/dir"}, "programs.w.cwd"),
        ({"command": ["x"], "max_restarts": 1.5}, "programs.w.max_restarts"),
        ({"command": ["x"], "restart_window_s": 0}, "programs.w.restart_window_s"),
        ({"command": ["x"], "backoff_initial_s": float("nan")}, "programs.w.backoff_initial_s"),
        (
            {"command": ["x"], "backoff_initial_s": 5, "backoff_max_s": 1},
            "programs.w.backoff_max_s",
        ),
        ({"command": ["x"], "stop_grace_s": -1}, "programs.w.stop_grace_s"),
        ({"command": ["x"], "comand": ["x"]}, "programs.w.comand"),
    ],
)
def test_a_bad_field_is_refused_naming_the_program_and_the_field(table, named):
    with pytest.raises(LauncherConfigError) as refused:
        parse_config({"programs": {"w": table}})
    message = str(refused.value)
    assert message.startswith(named + ":") and "\n" not in message


def test_bad_documents_are_refused_in_one_line(tmp_path):
    for text, named in [
        ("[programs]\n", "programs"),
        ("[launcher]\nx = 1\n", "launcher"),
        ('[programs."a b"]\ncommand = ["x"]\n', "programs.a b"),
        ("[programs.w\n", "not valid TOML"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(LauncherConfigError) as refused:
            load_config(str(path))
        assert str(refused.value).startswith(f"{path}: ") and named in str(refused.value)
        assert "\n" not in str(refused.value)
    with pytest.raises(LauncherConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.toml"))
