"""orch/launcher/logs.py and process.describe_exit: rotated per-agent files."""

from __future__ import annotations

import io

import pytest

from orch.launcher.logs import AgentLog, log_path, show
from orch.launcher.process import describe_exit


def test_the_log_rotates_at_its_size_keeping_its_backups(tmp_path):
    log = AgentLog(str(tmp_path), "w-1", max_bytes=1024, backups=2)
    for i in range(200):
        log.write(f"line {i:04d} {'x' * 40}\n".encode())
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["w-1.log", "w-1.log.1", "w-1.log.2"]
    assert all(p.stat().st_size <= 1024 for p in tmp_path.iterdir())
    assert "line 0199" in (tmp_path / "w-1.log").read_text()


def test_show_prints_the_last_lines(tmp_path):
    log = AgentLog(str(tmp_path), "w-1", max_bytes=10**6, backups=1)
    for i in range(5):
        log.write(f"line {i}".encode())
    log.write(b"\xff not utf-8\n")
    log.close()
    out = io.BytesIO()
    assert show(str(tmp_path), "w-1", lines=2, out=out) == 0
    assert out.getvalue() == b"line 4\n\\xff not utf-8\n"


def test_an_agent_id_cannot_name_a_path_outside_the_log_dir(tmp_path):
    for bad in ("../etc/passwd", "..", "a/b", ""):
        with pytest.raises(ValueError):
            log_path(str(tmp_path), bad)
    assert show(str(tmp_path), "../x", out=io.BytesIO()) == 2


def test_exits_are_described_as_the_exits_endpoint_takes_them():
    assert describe_exit(3) == {"exit_code": 3}
    assert describe_exit(0) == {"exit_code": 0}
    assert describe_exit(-9) == {"signal": "SIGKILL"}
    assert describe_exit(-15) == {"signal": "SIGTERM"}
