"""orch/supervision.py: the one restart-intensity rule both supervisors use."""

from orch.config import Settings
from orch.supervision import RestartPolicy, decide_restart


def test_backoff_doubles_from_the_initial_to_the_cap():
    policy = RestartPolicy(max_restarts=10, restart_window_s=1000, backoff_initial_s=0.1)
    history: tuple[float, ...] = ()
    delays = []
    for now in range(9):
        decision = decide_restart(policy, history, float(now))
        delays.append(decision.restart_in_s)
        history = decision.history
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]


def test_one_more_than_max_restarts_in_the_window_gives_up():
    policy = RestartPolicy(max_restarts=3, restart_window_s=60)
    history: tuple[float, ...] = ()
    for now in (0.0, 1.0, 2.0):
        decision = decide_restart(policy, history, now)
        assert not decision.gives_up
        history = decision.history
    final = decide_restart(policy, history, 3.0)
    assert final.gives_up and final.restart_in_s is None


def test_restarts_older_than_the_window_no_longer_count():
    policy = RestartPolicy(max_restarts=2, restart_window_s=10)
    decision = decide_restart(policy, (0.0, 1.0), 10.5)
    assert decision.restart_in_s == 0.2  # one restart (at 1.0) is still inside
    assert decision.history == (1.0, 10.5)
    assert decide_restart(policy, (0.0, 1.0), 30.0).restart_in_s == 0.1


def test_the_defaults_are_the_in_process_settings():
    settings, policy = Settings(), RestartPolicy()
    assert (policy.max_restarts, policy.restart_window_s) == (5, 60.0)
    assert (settings.max_restarts, settings.restart_window_s) == (5, 60.0)
    assert (policy.backoff_initial_s, policy.backoff_max_s) == (
        settings.restart_backoff_initial_s,
        settings.restart_backoff_max_s,
    )
