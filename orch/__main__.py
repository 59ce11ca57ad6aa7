"""``python -m orch`` / ``june-orchestrator``: serve the API, show the configuration,
back up the store, or (``agents``, ``tasks``, ``locks``, ``stats``, ``health``,
``events``) act as the command-line client of a running orchestrator (``orch/cli.py``),
or (``launcher``) start and supervise agent processes on this machine
(``orch/launcher/``), or (``mcp``) serve the Model Context Protocol for one agent
(``orch/mcp_server/``).

With no command it serves, as it always has. Serving stops before it starts, with one
line on stderr, if the configuration is bad (exit 2) or the store cannot be used, e.g. a
database written by a newer version (exit 1): the messages name the variable or file
to fix, and a traceback would only bury them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from orch import cli
from orch.config import ENVIRONMENT_VARIABLES, ConfigError, Settings
from orch.errors import OrchestratorError
from orch.launcher.command import add_launcher_command, run_launcher
from orch.logs import configure_logging
from orch.mcp_server import entry as mcp_entry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="june-orchestrator",
        description="June Orchestrator: the control plane for June's software agents.",
        epilog="Server settings come from the environment: "
        + ", ".join(ENVIRONMENT_VARIABLES)
        + ". Client commands: "
        + cli.EXIT_CODES_HELP
        + ".",
    )
    cli.add_client_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the REST API (the default command)")
    serve.add_argument("--host", help="address to bind (default: ORCHESTRATOR_HOST)")
    serve.add_argument(
        "--port", type=cli.port_number, help="port to bind (default: ORCHESTRATOR_PORT)"
    )
    commands.add_parser("config", help="print the effective settings as JSON and exit")
    backup = commands.add_parser(
        "backup",
        help="copy the SQLite store (ORCH_DB) to a new file; safe while the server runs",
        description="Copy the SQLite store that ORCH_DB names to DEST, consistently, while"
        " the server keeps running: the copy holds every commit made before it started."
        " DEST must not exist; the copy is integrity-checked and synced before it gets"
        " its name. Exit status: 0 done, 1 the backup failed, 2 bad configuration.",
    )
    backup.add_argument("dest", metavar="DEST", help="path of the backup file to create")
    backup.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the summary as JSON"
    )
    cli.add_commands(commands)
    add_launcher_command(commands)
    mcp_entry.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.command == "launcher":
        return run_launcher(args)
    if args.command in cli.COMMANDS:
        # A client of some server: the server's own settings are none of its business.
        return cli.run(args)
    if args.command == "mcp":
        return mcp_entry.run(args)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"june-orchestrator: {exc}", file=sys.stderr)
        return 2
    if args.command == "config":
        print(json.dumps(settings.describe(), indent=2, sort_keys=True))
        return 0
    if args.command == "backup":
        return _backup(settings.db, args.dest, as_json=bool(getattr(args, "json", False)))
    configure_logging(settings.log_level, settings.log_format)
    from orch.http.serve import serve

    try:
        serve(settings=settings, host=getattr(args, "host", None), port=getattr(args, "port", None))
    except OrchestratorError as exc:
        # Deliberate errors (the store refusing its file, an actor not answering at
        # start) carry a message for a person, as ConfigError does; anything else is
        # a bug and keeps its traceback.
        print(f"june-orchestrator: {exc}", file=sys.stderr)
        return 1
    return 0


def _backup(source: str, dest: str, *, as_json: bool) -> int:
    from orch.store.backup import backup_database

    try:
        summary = backup_database(source, dest)
    except OrchestratorError as exc:
        print(f"june-orchestrator: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(dataclasses.asdict(summary), sort_keys=True))
    else:
        print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
