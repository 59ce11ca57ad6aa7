"""The launcher: agent processes started, supervised and stopped on one machine.

``june-orchestrator launcher --config agents.toml`` — the client side of the
orchestrator, as a Nomad client or supervisord is: it reads ``[programs.NAME]``
tables (``config``), registers agents ``NAME-1..n`` and runs one process each
(``process``, with their output in rotated files, ``logs``; their tokens kept for
the next launcher, ``state``), restarts them with the in-process agents' restart
intensity (``orch.supervision``) and carries out the orchestrator's stop and start
decisions, learned from the event feed (``feed``,
``control``). It talks to the orchestrator through ``orch.client`` only.

The control loop (``orch.launcher.control.Launcher``) is imported only by the
``launcher`` command, so ``python -m orch`` serving or acting as a client loads none
of it.
"""

from orch.launcher.config import LauncherConfig, LauncherConfigError, Program, load_config

__all__ = ["LauncherConfig", "LauncherConfigError", "Program", "load_config"]
