"""``LauncherState``: the tokens a launcher keeps for the next one, on a real disk."""

from __future__ import annotations

import os

from orch.launcher.state import STATE_FILE, LauncherState


def test_what_is_kept_is_read_back_by_the_next_launcher_and_only_its_user_reads_it(tmp_path):
    state = LauncherState(str(tmp_path))
    state.keep("coder-1", "t1", resume=False)
    state.keep("coder-2", "t2", resume=False)
    state.set_resume("coder-1", True)
    state.forget("coder-2")
    again = LauncherState(str(tmp_path))
    assert again.get("coder-1") is not None and again.get("coder-1").token == "t1"
    assert again.get("coder-1").resume is True
    assert again.get("coder-2") is None
    assert os.stat(tmp_path / STATE_FILE).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temporary left


def test_an_unreadable_file_is_ignored_so_its_agents_are_registered_afresh(tmp_path, caplog):
    (tmp_path / STATE_FILE).write_text('{"agents": {"coder-1": {"token": "t"}}}')
    assert LauncherState(str(tmp_path)).get("coder-1") is None
    assert "ignoring" in caplog.text
    (tmp_path / STATE_FILE).write_text("not json")
    state = LauncherState(str(tmp_path))
    state.keep("coder-1", "t", resume=False)  # and the next write replaces it
    assert LauncherState(str(tmp_path)).get("coder-1").token == "t"
