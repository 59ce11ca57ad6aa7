"""orch/gc_tuning.py: the service's collector thresholds, held while orchestrators run."""

import gc

import pytest

from orch import Orchestrator, Settings
from orch.config import SERVICE_GC_THRESHOLDS, ConfigError


@pytest.fixture
def thresholds_before():
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)  # whatever a failed test left behind


def test_the_service_applies_its_thresholds_and_embedding_leaves_them_alone() -> None:
    assert Settings.from_env({}).gc_thresholds == SERVICE_GC_THRESHOLDS
    assert SERVICE_GC_THRESHOLDS != (700, 10, 10)  # CPython's own: the point is to differ
    assert Settings().gc_thresholds is None
    env = {"ORCH_GC_THRESHOLDS": " 2000, 20,50 "}
    assert Settings.from_env(env).gc_thresholds == (2000, 20, 50)
    for off in ("off", "default", ""):
        assert Settings.from_env({"ORCH_GC_THRESHOLDS": off}).gc_thresholds is None


@pytest.mark.parametrize("raw", ["700,10", "700,10,100,5", "a,b,c", "0,10,10", "700,-1,10"])
def test_thresholds_that_are_not_three_positive_integers_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"ORCH_GC_THRESHOLDS.*three positive integers"):
        Settings.from_env({"ORCH_GC_THRESHOLDS": raw})


def test_an_orchestrator_holds_its_thresholds_while_running(thresholds_before) -> None:
    with Orchestrator(Settings(gc_thresholds=(1234, 11, 99))):
        assert gc.get_threshold() == (1234, 11, 99)
    assert gc.get_threshold() == thresholds_before


def test_the_original_thresholds_return_when_the_last_orchestrator_stops(
    thresholds_before,
) -> None:
    first = Orchestrator(Settings(gc_thresholds=(1000, 10, 100))).start()
    second = Orchestrator(Settings(gc_thresholds=(2000, 10, 100))).start()
    assert gc.get_threshold() == (2000, 10, 100)
    first.stop()
    assert gc.get_threshold() == (2000, 10, 100)  # the second still runs
    first.stop()  # stopping twice does not give back another's hold
    assert gc.get_threshold() == (2000, 10, 100)
    second.stop()
    assert gc.get_threshold() == thresholds_before


def test_an_embedded_orchestrator_without_thresholds_changes_nothing(thresholds_before) -> None:
    gc.set_threshold(555, 5, 5)
    with Orchestrator(Settings()):
        assert gc.get_threshold() == (555, 5, 5)
    assert gc.get_threshold() == (555, 5, 5)
