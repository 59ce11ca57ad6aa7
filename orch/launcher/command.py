"""``june-orchestrator launcher ...``: the sub-command's arguments and its entry point.

``launcher --config FILE`` runs the launcher; ``launcher logs NAME-i [-f]`` shows an
agent's log. Exit status: 0 stopped by SIGTERM or Ctrl-C (or logs shown); 1 the
orchestrator refuses the launcher's admin token, or no such log; 2 a bad file or
usage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from orch.launcher.logs import DEFAULT_LOG_DIR

EXIT_CODES_HELP = (
    "exit status: 0 stopped by SIGTERM or Ctrl-C; 1 the orchestrator refused the admin"
    " token (logs: no such log); 2 bad file or usage"
)


def add_launcher_command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
) -> None:
    """Add ``launcher`` (and ``launcher logs``) to a parser's sub-commands."""
    launcher = commands.add_parser(
        "launcher",
        help="start, supervise and stop agent processes on this machine",
        description="Run the [programs.NAME] of a TOML file as agents NAME-1..n: registered"
        " with the orchestrator at --url, restarted when they crash, stopped and started by"
        " the orchestrator. " + EXIT_CODES_HELP + ".",
    )
    launcher.add_argument("--config", metavar="FILE", help="the launcher's TOML file")
    # The top level holds the defaults ($ORCH_URL, $ORCH_ADMIN_TOKEN); given here, they win.
    launcher.add_argument(
        "--url", default=argparse.SUPPRESS, help="the orchestrator's URL (default: $ORCH_URL)"
    )
    launcher.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="the admin token (default: $ORCH_ADMIN_TOKEN); never passed to the processes",
    )
    launcher.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        metavar="S",
        help="time limit of each request to the orchestrator (default: 10)",
    )
    launcher.add_argument(
        "--log-dir",
        default=os.environ.get("ORCH_LAUNCHER_LOG_DIR") or DEFAULT_LOG_DIR,
        help="where each agent's output goes, NAME-i.log, rotated"
        f" (default: $ORCH_LAUNCHER_LOG_DIR or ./{DEFAULT_LOG_DIR})",
    )
    launcher.add_argument(
        "--id",
        dest="launcher_id",
        default=None,
        help="this launcher's name in its agents' metadata (default: the host name)",
    )
    actions = launcher.add_subparsers(dest="launcher_command", metavar="ACTION")
    logs = actions.add_parser("logs", help="show an agent's log (NAME-i)")
    logs.add_argument("agent_id", metavar="NAME-i")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing what is added")
    logs.add_argument("-n", "--lines", type=int, default=None, help="only the last N lines")
    logs.add_argument("--log-dir", default=argparse.SUPPRESS, help="as for the launcher")


def run_launcher(args: argparse.Namespace) -> int:
    """Run the parsed ``launcher`` command; returns the exit status."""
    if args.launcher_command == "logs":
        from orch.launcher.logs import show

        return show(args.log_dir, args.agent_id, follow=args.follow, lines=args.lines)
    if not args.config:
        print("june-orchestrator launcher: --config FILE is required", file=sys.stderr)
        return 2
    from orch.launcher.config import LauncherConfigError, load_config
    from orch.launcher.control import Launcher

    try:
        config = load_config(args.config)
    except LauncherConfigError as exc:
        print(f"june-orchestrator launcher: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    launcher = Launcher(
        args.config,
        config,
        url=args.url,
        admin_token=args.token,
        log_dir=args.log_dir,
        launcher_id=args.launcher_id,
        timeout_s=args.timeout,
    )
    return launcher.run()
