"""One agent process: started in its own process group, dying with the launcher.

Each child gets its own session (``setsid``: its own process group, away from the
launcher's terminal, so a Ctrl-C there reaches the launcher only, which then stops
the children in order) and ``PR_SET_PDEATHSIG`` = SIGKILL, so a launcher killed with
SIGKILL takes its children with it. Stopping signals the whole group: what the
program started goes too. stdout and stderr go through a pipe to a rotated file per
agent (``orch/launcher/logs.py``); the launcher owns the file, so rotation never
races the program's writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from orch.launcher.logs import AgentLog

logger = logging.getLogger("orch.launcher")

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int]:
    """libc's ``prctl``, looked up in the parent: the forked child must not load anything."""
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with(parent_pid: int) -> Callable[[], None]:
    """The child's preexec step: ask the kernel for SIGKILL when the launcher dies.

    The death signal follows the *thread* that forked, so children are only ever
    started from the launcher's main thread. If the launcher died before the
    request took effect, the child ends itself at once rather than run unsupervised.
    """
    prctl = _prctl()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class ChildProcess:
    """A running agent process and the thread copying its output to its log."""

    def __init__(
        self,
        agent_id: str,
        command: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        log: AgentLog,
    ) -> None:
        self.agent_id = agent_id
        self._log = log
        self._token = env.get("ORCH_AGENT_TOKEN")
        self.process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()),
            close_fds=True,
        )
        self.pid = self.process.pid
        self._pump = threading.Thread(target=self._copy_output, name=f"log-{agent_id}", daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        try:
            for line in iter(stream.readline, b""):
                self._log.write(line)
        except (OSError, ValueError):  # closed under us while stopping
            pass
        finally:
            stream.close()

    def poll(self) -> int | None:
        """The exit status once it has ended (negative: killed by that signal)."""
        return self.process.poll()

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the child's whole process group (gone already: nothing)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def reap(self) -> None:
        """After the child ended: kill what is left of its group and its strays, finish its log."""
        self.signal_group(signal.SIGKILL)
        if self._token:
            kill_strays(self._token)
        self._pump.join(timeout=2.0)


def kill_strays(token: str) -> list[int]:
    """SIGKILL every process of ours that still holds the agent's token; their pids.

    The group signal and ``PR_SET_PDEATHSIG`` reach the agent's process and what stays
    in its group, not what it started in a session of its own (a daemonised helper,
    ``setsid``), nor any process once the launcher itself was killed: those keep the
    token and could go on acting as the agent beside its next process. Whatever a
    process started inherits its environment, so the token in
    ``/proc/PID/environ`` finds them; another user's processes cannot be read, and
    are not ours to kill.
    """
    needle = f"ORCH_AGENT_TOKEN={token}".encode()
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle not in environ.read().split(b"\0"):
                    continue
            os.kill(int(entry), signal.SIGKILL)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        killed.append(int(entry))
    if killed:
        logger.warning(
            "killed %d stray process(es) holding an agent's token: %s", len(killed), killed
        )
    return killed


def describe_exit(returncode: int) -> dict[str, int | str]:
    """``{"exit_code": n}`` or ``{"signal": "SIGKILL"}``, as ``POST /agents/{id}/exits`` takes."""
    if returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:
            return {"signal": f"SIG{-returncode}"}
    return {"exit_code": returncode}
