"""``june-orchestrator mcp``: the command line of the MCP server, and its lifetime.

This is the entry edge, so the environment is read here: ``ORCH_URL``,
``ORCH_AGENT_ID`` and ``ORCH_AGENT_TOKEN`` (join a registration, as the launcher
gives them to its processes) and ``ORCH_ADMIN_TOKEN`` (register with ``--register``,
and read every lock). The session is opened before the MCP transport starts, so a
bad token or an unreachable orchestrator ends the process with one line on stderr
and an exit status, before any client is told the server is ready.

stdout belongs to the MCP protocol: every log line goes to stderr.

Exit status: 0 the session ended (stdin closed, SIGTERM or SIGINT); 1 the
orchestrator refused the agent (a wrong token, an id in use); 2 usage (missing
agent id or token, the ``mcp`` extra not installed); 3 the orchestrator cannot be
reached.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from orch.errors import OrchestratorError

PROG = "june-orchestrator mcp"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

DESCRIPTION = (
    "Serve the Model Context Protocol over stdio for one June agent, so that an MCP "
    "client (Claude Code, Claude Desktop, an agent framework) can take tasks, report "
    "progress, complete or fail them and hold locks. Joins the registration named by "
    "ORCH_AGENT_ID and ORCH_AGENT_TOKEN, or with --register registers and starts one "
    "(using ORCH_ADMIN_TOKEN) and stops it, drained, when the session ends. Heartbeats "
    "are sent in the background for as long as the session lives. Exit status: 0 the "
    "session ended; 1 the orchestrator refused the agent; 2 usage; 3 cannot connect."
)


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """The ``mcp`` sub-command (its options need no ``mcp`` package to parse)."""
    parser = commands.add_parser(
        "mcp", help="serve MCP over stdio for one agent", description=DESCRIPTION
    )
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="the orchestrator's URL (default: $ORCH_URL or http://127.0.0.1:8005)",
    )
    parser.add_argument(
        "--register",
        action="store_true",
        help="register and start the agent (with $ORCH_ADMIN_TOKEN) instead of joining one; "
        "it is stopped, drained, when the session ends",
    )
    parser.add_argument(
        "--agent-id", help="the agent's id (default: $ORCH_AGENT_ID; required with --register)"
    )
    parser.add_argument(
        "--agent-type", default="implementation", help="with --register (default implementation)"
    )
    parser.add_argument(
        "--capability",
        dest="capabilities",
        action="extend",
        nargs="+",
        default=[],
        metavar="C",
        help="with --register: a capability the agent has (repeatable)",
    )
    parser.add_argument(
        "--max-concurrent-tasks",
        type=int,
        metavar="N",
        help="with --register: tasks it may hold at once (default: the orchestrator's)",
    )
    return parser


def run(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    """Run the server until the session ends; returns the exit status."""
    env = dict(os.environ if environ is None else environ)
    level = env.get("LOG_LEVEL", "INFO").upper()
    if level not in _LOG_LEVELS:
        print(
            f"{PROG}: LOG_LEVEL={level!r}: must be one of {', '.join(_LOG_LEVELS)}", file=sys.stderr
        )
        return EXIT_USAGE
    logging.basicConfig(
        stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        session = _session(args, env)
    except _UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Until the transport takes over SIGTERM, it interrupts like Ctrl-C, so that a
    # client that gives up during start-up still gets its agent stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        session.open()
        from orch.mcp_server.tools import build_server

        _serve_stdio(build_server(session), session)
    except OrchestratorError as exc:
        print(f"{PROG}: {_one_line(exc.message)}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.code == "unreachable" else EXIT_REFUSED
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _UsageError(Exception):
    pass


def _session(args: argparse.Namespace, env: dict[str, str]) -> Any:
    try:
        import mcp  # noqa: F401  (the optional extra)
    except ImportError:
        raise _UsageError(
            "the MCP SDK is not installed: pip install 'june-orchestrator[mcp]'"
        ) from None
    from orch.client import DEFAULT_TIMEOUT_S, DEFAULT_URL
    from orch.mcp_server.session import AgentSession, Registration

    url = getattr(args, "url", None) or env.get("ORCH_URL") or DEFAULT_URL
    timeout_s = getattr(args, "timeout", None) or DEFAULT_TIMEOUT_S
    admin_token = getattr(args, "token", None) or env.get("ORCH_ADMIN_TOKEN") or None
    agent_id = args.agent_id or env.get("ORCH_AGENT_ID")
    if args.register:
        if not agent_id:
            raise _UsageError("--register needs --agent-id ID (or $ORCH_AGENT_ID)")
        registration = Registration(
            agent_type=args.agent_type,
            capabilities=tuple(args.capabilities),
            max_concurrent_tasks=args.max_concurrent_tasks,
        )
        return AgentSession(
            url,
            agent_id=agent_id,
            admin_token=admin_token,
            registration=registration,
            timeout_s=timeout_s,
        )
    token = env.get("ORCH_AGENT_TOKEN")
    if not agent_id or not token:
        raise _UsageError(
            "set ORCH_AGENT_ID and ORCH_AGENT_TOKEN to act for a registered agent, "
            "or pass --register --agent-id ID to register one"
        )
    return AgentSession(
        url, agent_id=agent_id, token=token, admin_token=admin_token, timeout_s=timeout_s
    )


def _serve_stdio(server: Any, session: Any) -> None:
    """Serve until stdin closes, or SIGTERM/SIGINT arrives.

    The SDK reads stdin on a worker thread that no cancellation can interrupt while
    the client keeps the pipe open, so a signal ends the session here: the agent is
    stopped as at any end, then the process exits at once.
    """
    import anyio

    async def serve() -> None:
        async with anyio.create_task_group() as group:

            async def end_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        logging.getLogger("orch.mcp").info(
                            "%s: ending the session", signal.Signals(signum).name
                        )
                        await anyio.to_thread.run_sync(session.close)
                        logging.shutdown()
                        sys.stderr.flush()
                        os._exit(EXIT_OK)

            group.start_soon(end_on_signal)
            await server.run_stdio_async()
            group.cancel_scope.cancel()

    anyio.run(serve)


def _one_line(text: str) -> str:
    return " ".join(text.split())
