"""orch/controllers/config.py: versioned agent config and the defaults new agents get."""

from __future__ import annotations

import pytest

from orch import Invalid, Orchestrator
from orch.controllers import ConfigController
from orch.errors import VersionMismatch


@pytest.fixture
def config(orch: Orchestrator) -> ConfigController:
    orch.register_agent("a1", "implementation")
    return orch.controllers.config


def test_every_change_bumps_the_version_and_a_stale_one_is_refused(config):
    assert config.agent_config("a1")["version"] == 1
    changed = config.update_agent_config("a1", {"task_timeout_s": 60}, expected_version=1)
    assert changed["version"] == 2 and changed["task_timeout_s"] == 60
    with pytest.raises(VersionMismatch) as info:
        config.update_agent_config("a1", {"task_timeout_s": 90}, expected_version=1)
    assert info.value.details["version"] == 2
    assert config.agent_config("a1")["task_timeout_s"] == 60


def test_replace_all_resets_what_is_not_named_to_the_defaults(config):
    config.set_config_defaults({"task_timeout_s": 120})
    config.update_agent_config("a1", {"task_timeout_s": 60, "max_concurrent_tasks": 2})
    replaced = config.update_agent_config("a1", {"max_concurrent_tasks": 3}, replace_all=True)
    assert replaced["task_timeout_s"] == 120 and replaced["max_concurrent_tasks"] == 3
    assert config.config_defaults()["task_timeout_s"] == 120


def test_arguments_are_named_as_the_python_api_names_them(config):
    for call, field in [
        (lambda: config.update_agent_config("a1", {}, expected_version=0), "expected_version"),
        (lambda: config.update_agent_config("a1", ["x"]), "config"),
        (lambda: config.set_config_defaults(None), "config"),
    ]:
        with pytest.raises(Invalid) as info:
            call()
        assert info.value.field == field
