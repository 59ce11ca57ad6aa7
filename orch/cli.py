"""The command-line client: look at and steer a running orchestrator over its REST API.

``june-orchestrator agents list`` and friends (``python -m orch`` too) dispatch here;
``main(argv)`` runs one command and returns the exit status:

* 0 - done (``health``: the server is healthy or degraded; ``--wait``: the task
  completed)
* 1 - the server answered with an error (one line on stderr:
  ``june-orchestrator: <detail>``), or ``health`` found it unhealthy
* 2 - usage error (bad option, malformed ``--payload``)
* 3 - cannot connect to the server
* 4 - ``tasks submit|show --wait``: the task ended ``dead`` (failed, no attempts left)
* 5 - ``tasks submit|show --wait``: the task ended ``cancelled``
* 6 - ``tasks submit|show --wait``: the wait ran out before the task ended

So ``submit --wait S && next-step`` goes on only after a completed task.

Output is a human-readable table unless ``--json`` asks for the server's JSON
(``events --follow --json`` writes one event per line). ``events`` tells an ``--after``
beyond the server's newest event ("ahead") from a server that restarted (another
``epoch``), and ``--follow``, once it has followed a server, waits through a restart.
A value that cannot be used (``--url`` without a scheme, a number out of range) is
refused in one sentence naming it and what is allowed, before any request.

The server reads its settings only in ``orch/config.py``; this client is a separate
program, and reads ``ORCH_URL`` and ``ORCH_ADMIN_TOKEN`` here, as the defaults of
``--url`` and ``--token``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from orch.cli_output import (
    cell,
    event_line,
    flatten,
    print_json,
    print_record,
    print_status,
    print_table,
    when,
)
from orch.client import (
    DEFAULT_FAILOVER_WAIT_S,
    DEFAULT_URL,
    TERMINAL_TASK_STATES,
    OrchestratorClient,
    Unreachable,
)
from orch.errors import Invalid, OrchestratorError, Timeout

PROG = "june-orchestrator"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TASK_DEAD = 4
EXIT_TASK_CANCELLED = 5
EXIT_WAIT_RAN_OUT = 6

#: How often ``events --follow`` tries a server it lost (a restart takes seconds).
RECONNECT_S = 1.0

#: The exit status of a ``--wait`` by how the task ended.
TASK_END_EXIT = {
    "completed": EXIT_OK,
    "dead": EXIT_TASK_DEAD,
    "cancelled": EXIT_TASK_CANCELLED,
}

#: Top-level commands this module handles (``serve`` and ``config`` are the server's).
COMMANDS = ("agents", "tasks", "locks", "stats", "health", "events")

EXIT_CODES_HELP = (
    "exit status: 0 ok; 1 the server answered with an error (or health is unhealthy); "
    "2 usage error; 3 cannot connect; tasks submit|show --wait and tasks watch: "
    "0 completed, 4 dead, 5 cancelled, 6 the wait ran out"
)


class UsageError(Exception):
    """A command line that parses but cannot be used (``--payload`` that is not JSON)."""


# ----------------------------------------------------------------- parser


def add_client_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """``--url``, ``--token``, ``--json``, ``--timeout``.

    Given both before and after the command (``--json stats`` and ``stats --json``):
    the top level holds the defaults, each command only overrides when given.
    """
    group = parser.add_argument_group("client options")
    default: Callable[[Any], Any] = (
        (lambda value: value) if top_level else (lambda _: argparse.SUPPRESS)
    )
    group.add_argument(
        "--url",
        default=default(os.environ.get("ORCH_URL") or DEFAULT_URL),
        help=(
            "the orchestrator's URL, or several separated by commas (a cluster's nodes:"
            " the next is tried when one cannot be reached or has no leader)"
            f" (default: $ORCH_URL or {DEFAULT_URL})"
        ),
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get("ORCH_ADMIN_TOKEN") or None),
        help="the admin token (default: $ORCH_ADMIN_TOKEN)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the server's JSON instead of a table",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=default(10.0),
        metavar="S",
        help="time limit of each request in seconds (default: 10)",
    )
    group.add_argument(
        "--failover-wait",
        type=_non_negative_float,
        default=default(DEFAULT_FAILOVER_WAIT_S),
        metavar="S",
        help=(
            "how long a command keeps trying the URLs, with backoff, before it gives"
            f" up as unreachable (default: {DEFAULT_FAILOVER_WAIT_S:g})"
        ),
    )


def add_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
) -> None:
    """Add the client commands to a parser's sub-commands (shared with ``__main__``)."""

    def command(
        parent: argparse._SubParsersAction,  # type: ignore[type-arg]
        name: str,
        handler: Callable[..., int],
        help_text: str,
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        add_client_options(sub, top_level=False)
        sub.set_defaults(handler=handler)
        return sub

    def group(name: str, help_text: str) -> argparse._SubParsersAction:  # type: ignore[type-arg]
        parser = commands.add_parser(name, help=help_text, description=help_text)
        sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        return sub

    agents = group("agents", "list, show, start, stop or remove agents")
    listing = command(agents, "list", _agents_list, "list agents")
    listing.add_argument("--status", help="only agents in this state (idle, busy, lost, ...)")
    listing.add_argument("--type", dest="agent_type", help="only agents of this type")
    listing.add_argument("--capability", help="only agents with this capability")
    listing.add_argument("--limit", type=_positive_int, help="at most this many")
    listing.add_argument(
        "--offset", type=_non_negative_int, help="skip this many first (by id): the next page"
    )
    command(agents, "show", _agents_show, "show one agent").add_argument("agent_id")
    command(agents, "start", _agents_start, "admit an agent to scheduling").add_argument("agent_id")
    stop = command(agents, "stop", _agents_stop, "stop an agent (draining by default)")
    stop.add_argument("agent_id")
    stop.add_argument(
        "--no-drain",
        dest="drain",
        action="store_false",
        help="requeue its running tasks now instead of letting them finish",
    )
    command(agents, "remove", _agents_remove, "deregister an agent").add_argument("agent_id")

    tasks = group("tasks", "submit, list, show, watch or cancel tasks")
    submit = command(tasks, "submit", _tasks_submit, "submit a task (queued or assigned)")
    submit.add_argument("--id", dest="task_id", help="task id (default: the server makes one)")
    payload = submit.add_mutually_exclusive_group()
    payload.add_argument("--payload", help="the payload, a JSON object (default: {})")
    payload.add_argument(
        "--payload-file", metavar="PATH", help="read the payload from a file ('-': stdin)"
    )
    submit.add_argument(
        "--priority", type=_priority, default=0, help="0-10, higher first (default 0)"
    )
    submit.add_argument(
        "--capability",
        dest="capabilities",
        action="append",
        default=[],
        metavar="NAME",
        help="a capability the agent must have (repeatable)",
    )
    submit.add_argument("--type", dest="agent_type", help="the agent type it needs")
    submit.add_argument("--agent", dest="agent_id", help="assign to this agent (409 if it cannot)")
    submit.add_argument(
        "--resource",
        dest="resources",
        action="append",
        default=[],
        metavar="NAME",
        help="a resource to lock for the task (repeatable)",
    )
    submit.add_argument(
        "--max-attempts", type=_positive_int, default=3, metavar="N", help="(default 3)"
    )
    submit.add_argument(
        "--task-timeout",
        dest="timeout_s",
        type=_positive_float,
        metavar="S",
        help="lease of one attempt (default: the agent's task_timeout_s)",
    )
    submit.add_argument("--force", action="store_true", help="replace an active task of this id")
    submit.add_argument(
        "--wait", type=_positive_float, metavar="S", help="wait up to S seconds for the result"
    )
    listing = command(tasks, "list", _tasks_list, "list tasks, oldest first")
    listing.add_argument("--status", help="only tasks in this state (pending, running, ...)")
    listing.add_argument("--agent", dest="agent_id", help="only tasks of this agent")
    listing.add_argument("--limit", type=_positive_int, help="at most this many (default 100)")
    show = command(tasks, "show", _tasks_show, "show one task, with its result or error")
    show.add_argument("task_id")
    show.add_argument(
        "--wait", type=_positive_float, metavar="S", help="first wait up to S seconds for its end"
    )
    command(tasks, "cancel", _tasks_cancel, "cancel a task").add_argument("task_id")
    watch = command(
        tasks,
        "watch",
        _tasks_watch,
        "follow a task's state and progress until it ends (exit as --wait)",
    )
    watch.add_argument("task_id")
    watch.add_argument(
        "--interval", type=_positive_float, default=1.0, metavar="S", help="poll every S s (1)"
    )
    watch.add_argument(
        "--wait", type=_positive_float, metavar="S", help="give up (exit 6) after S seconds"
    )

    locks = group("locks", "look at locks")
    command(locks, "list", _locks_list, "every held or awaited lock")

    command(commands, "stats", _stats, "counts of agents, tasks and locks")
    command(commands, "health", _health, "health and dependency checks")
    events = command(commands, "events", _events, "the event feed")
    events.add_argument(
        "--after", type=_sequence_number, default=0, metavar="SEQ", help="events after SEQ"
    )
    events.add_argument("--limit", type=_positive_int, default=1000, help="at most this many")
    events.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C"
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of the client commands alone (``main``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Command-line client of the June Orchestrator.",
        epilog=EXIT_CODES_HELP,
    )
    add_client_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(commands)
    return parser


# Argument types: each refusal is one sentence naming the value and what is allowed
# (argparse would say "invalid _positive_int value: 'x'").


def _whole_number(text: str, allowed: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; {allowed}") from None


def _positive_int(text: str) -> int:
    allowed = "give a whole number of at least 1"
    value = _whole_number(text, allowed)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is too small; {allowed}")
    return value


def _at_least_zero(text: str, allowed: str) -> int:
    value = _whole_number(text, allowed)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; {allowed}")
    return value


def _sequence_number(text: str) -> int:
    return _at_least_zero(text, "give an event's seq: a whole number of at least 0")


def _priority(text: str) -> int:
    allowed = "give a whole number from 0 to 10"
    value = _whole_number(text, allowed)
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; {allowed}")
    return value


def _non_negative_int(text: str) -> int:
    return _at_least_zero(text, "give a whole number of at least 0")


def _positive_float(text: str) -> float:
    allowed = "give a number of seconds above 0, like 2.5"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; {allowed}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not above 0; {allowed}")
    return value


def port_number(text: str) -> int:
    """A TCP port (``serve --port``), refused in one sentence as the others are."""
    allowed = "give a port number from 0 to 65535"
    value = _whole_number(text, allowed)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; {allowed}")
    return value


def _non_negative_float(text: str) -> float:
    allowed = "give a number of seconds of at least 0, like 2.5"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; {allowed}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 or more; {allowed}")
    return value


# ------------------------------------------------------------------- entry


def main(argv: Sequence[str] | None = None) -> int:
    """Run one client command; return the exit status (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a parsed client command against ``args.url``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        client = OrchestratorClient(
            args.url,
            token=args.token,
            timeout_s=args.timeout,
            failover_wait_s=args.failover_wait,
        )
    except Invalid as exc:  # a --url (or $ORCH_URL) that is not one, say
        message = exc.message
        if exc.field == "url":
            message = "--url (or $ORCH_URL) " + message.removeprefix("url: ")
        print(f"{PROG}: {message}", file=err)
        return EXIT_USAGE
    try:
        return args.handler(client, args, out)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=err)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"{PROG}: {exc.message}", file=err)
        return EXIT_UNREACHABLE
    except OrchestratorError as exc:
        print(f"{PROG}: {_one_line(exc.message)}", file=err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK if getattr(args, "follow", False) else 130
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        return EXIT_OK
    finally:
        client.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------- commands


def _agents_list(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.agents(
        state=args.status,
        agent_type=args.agent_type,
        capability=args.capability,
        limit=args.limit,
        offset=args.offset,
    )
    if args.json:
        return print_json(answer, out)
    rows = [
        [
            a["agent_id"],
            a["agent_type"],
            a["status"],
            f"{len(a['current_tasks'])}/{a['config']['max_concurrent_tasks']}",
            ",".join(a["capabilities"]),
        ]
        for a in answer["agents"]
    ]
    print_table(["AGENT", "TYPE", "STATUS", "TASKS", "CAPABILITIES"], rows, out)
    print(f"{len(rows)} shown; {answer['total']} agents, {answer['active']} active", file=out)
    return EXIT_OK


def _agents_show(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    return print_record(client.agent(args.agent_id), args, out)


def _agents_start(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    return print_status(client.start_agent(args.agent_id), "agent", args.agent_id, args, out)


def _agents_stop(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.stop_agent(args.agent_id, drain=args.drain)
    return print_status(answer, "agent", args.agent_id, args, out)


def _agents_remove(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.deregister_agent(args.agent_id)
    return print_status(answer, "agent", args.agent_id, args, out)


def _tasks_submit(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.assign_task(
        _payload(args),
        task_id=args.task_id,
        agent_id=args.agent_id,
        priority=args.priority,
        agent_type=args.agent_type,
        capabilities=args.capabilities,
        resources=args.resources,
        max_attempts=args.max_attempts,
        timeout_s=args.timeout_s,
        force=args.force,
    )
    if args.wait is not None:
        return _wait_for_end(client, answer["task_id"], args, out)
    if args.json:
        return print_json(answer, out)
    where = f" to {answer['agent_id']}" if answer.get("agent_id") else ""
    print(f"task {answer['task_id']} {answer['status']}{where}", file=out)
    return EXIT_OK


def _payload(args: argparse.Namespace) -> dict[str, Any]:
    if args.payload_file is not None:
        source = f"--payload-file {args.payload_file}"
        try:
            if args.payload_file == "-":
                text = sys.stdin.read()
            else:
                with open(args.payload_file, encoding="utf-8") as file:
                    text = file.read()
        except OSError as exc:
            raise UsageError(f"{source}: {exc.strerror}") from None
    elif args.payload is not None:
        source, text = "--payload", args.payload
    else:
        return {}
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise UsageError(f'{source}: must be a JSON object, like \'{{"repo": "june"}}\'')
    return payload


def _tasks_list(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    found = client.tasks(state=args.status, agent_id=args.agent_id, limit=args.limit)
    if args.json:
        return print_json({"tasks": found, "count": len(found)}, out)
    rows = [
        [
            str(t["task_id"]),
            t["status"],
            str(t["priority"]),
            t["agent_id"] or "-",
            f"{t['attempts']}/{t['max_attempts']}",
            when(t["created_at"]),
        ]
        for t in found
    ]
    print_table(["TASK", "STATUS", "PRIORITY", "AGENT", "ATTEMPTS", "CREATED"], rows, out)
    print(f"{len(rows)} tasks", file=out)
    return EXIT_OK


def _tasks_show(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.wait is not None:
        return _wait_for_end(client, args.task_id, args, out)
    return _print_task(client.task(args.task_id), args, out)


def _wait_for_end(
    client: OrchestratorClient, task_id: Any, args: argparse.Namespace, out: TextIO
) -> int:
    """Print the task once it has ended; the exit status says how (``TASK_END_EXIT``)."""
    try:
        task = client.wait_for_task(task_id, args.wait)
    except Timeout as exc:
        if "status" not in exc.details:
            raise  # a request that timed out, not the wait: an error like any other
        print(f"{PROG}: {_one_line(exc.message)}", file=sys.stderr)
        return EXIT_WAIT_RAN_OUT
    _print_task(task, args, out)
    return TASK_END_EXIT.get(task["status"], EXIT_ERROR)


def _print_task(task: dict[str, Any], args: argparse.Namespace, out: TextIO) -> int:
    if not args.json and task.get("progress"):
        task = {**task, "progress": _progress_text(task["progress"])}
    return print_record(task, args, out, times=("created_at", "assigned_at", "finished_at"))


def _progress_text(progress: Mapping[str, Any]) -> str:
    """``62% tests pass (2026-12-06T23:10:00+00:00)``: the latest report, one line."""
    percent = progress.get("percent")
    share = "" if percent is None else f"{percent:g}% "
    return f"{share}{_one_line(str(progress.get('message', '')))} ({when(progress.get('at'))})"


def _tasks_watch(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    """One line per change of state, attempt, agent or progress, until the task ends.

    Exit status as for ``--wait`` (``TASK_END_EXIT``): 0 completed, 4 dead,
    5 cancelled, 6 ``--wait`` ran out first.
    """
    deadline = None if args.wait is None else time.monotonic() + args.wait
    shown = None
    while True:
        task = client.task(args.task_id)
        seen = (task["status"], task["attempts"], task["agent_id"], task.get("progress"))
        if seen != shown:
            shown = seen
            print(json.dumps(task) if args.json else _watch_line(task), file=out, flush=True)
        if task["status"] in TERMINAL_TASK_STATES:
            return TASK_END_EXIT.get(task["status"], EXIT_ERROR)
        if deadline is not None and time.monotonic() >= deadline:
            print(f"{PROG}: task {args.task_id} is still {task['status']}", file=sys.stderr)
            return EXIT_WAIT_RAN_OUT
        pause_s = (
            args.interval if deadline is None else min(args.interval, deadline - time.monotonic())
        )
        time.sleep(max(0.0, pause_s))


def _watch_line(task: Mapping[str, Any]) -> str:
    parts = [when(time.time()), task["status"]]
    if task.get("agent_id"):
        parts.append(f"attempt {task['attempts']} on {task['agent_id']}")
    if task.get("progress"):
        parts.append(_progress_text(task["progress"]))
    if task["status"] in TERMINAL_TASK_STATES:
        parts.append(cell(task.get("result") if task["status"] == "completed" else task["error"]))
    return "  ".join(parts)


def _tasks_cancel(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    return print_status(client.cancel_task(args.task_id), "task", args.task_id, args, out)


def _locks_list(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    found = client.locks()
    if args.json:
        return print_json({"locks": found, "count": len(found)}, out)
    rows = [
        [
            lock["resource"],
            lock["mode"] or "-",
            ",".join(f"{h['agent_id']}#{h['fencing_token']}" for h in lock["holders"]) or "-",
            ",".join(w["agent_id"] for w in lock["waiters"]) or "-",
            str(lock["fencing_token"]),
        ]
        for lock in found
    ]
    print_table(["RESOURCE", "MODE", "HOLDERS", "WAITERS", "FENCING"], rows, out)
    print(f"{len(rows)} locks", file=out)
    return EXIT_OK


def _stats(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.stats()
    if args.json:
        return print_json(answer, out)
    print_table(["STAT", "VALUE"], [[k, cell(v)] for k, v in flatten(answer)], out)
    return EXIT_OK


def _health(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = client.health()
    code = EXIT_ERROR if answer.get("status") == "unhealthy" else EXIT_OK
    if args.json:
        print_json(answer, out)
        return code
    print(
        f"{answer.get('status')}: {answer.get('active_agents')} active of "
        f"{answer.get('total_agents')} agents, {answer.get('pending_tasks')} pending tasks",
        file=out,
    )
    rows = []
    for name, check in sorted((answer.get("checks") or {}).items()):
        notes = [f"{check['latency_ms']}ms"] if check.get("latency_ms") is not None else []
        if check.get("last_error"):
            notes.append(str(check["last_error"]))
        if check.get("dead"):
            notes.append("dead: " + ",".join(map(str, check["dead"])))
        rows.append([name, str(check.get("status")), " ".join(notes) or "-"])
    print_table(["CHECK", "STATUS", "NOTES"], rows, out)
    return code


def _events(client: OrchestratorClient, args: argparse.Namespace, out: TextIO) -> int:
    if not args.follow:
        answer = client.events(args.after, limit=args.limit)
        if answer.get("ahead"):
            print(_ahead_note(args.after, answer, "nothing to show"), file=sys.stderr)
        if args.json:
            return print_json(answer, out)
        for event in answer["events"]:
            print(event_line(event), file=out)
        return EXIT_OK
    after, epoch, lost = args.after, None, False
    while True:  # until Ctrl-C; each poll is a bounded long-poll
        try:
            answer = client.events(after, wait_s=20.0, limit=args.limit, epoch=epoch)
        except Unreachable as exc:
            if epoch is None:
                raise  # never reached: a wrong --url, said at once (exit 3)
            # Once followed, a server that goes away is waited for: a restart is
            # what a follower should see through (and is then told of, by epoch).
            if not lost:
                print(
                    f"{PROG}: {exc.message}; trying again every {RECONNECT_S:g} s",
                    file=sys.stderr,
                )
                lost = True
            time.sleep(RECONNECT_S)
            continue
        lost = False
        if answer.get("reset"):
            print(
                f"{PROG}: the server restarted and numbers its events from 1 again;"
                " following it from its first event",
                file=sys.stderr,
            )
        elif answer.get("ahead"):
            print(_ahead_note(after, answer, "following from there"), file=sys.stderr)
        for event in answer["events"]:
            line = json.dumps(event) if args.json else event_line(event)
            print(line, file=out, flush=True)
        after, epoch = answer["next"], answer.get("epoch")


def _ahead_note(after: int, answer: Mapping[str, Any], then: str) -> str:
    """Why nothing came: ``after`` is beyond the server's newest event (``ahead``)."""
    return (
        f"{PROG}: --after {after} is ahead of the server, whose newest event is"
        f" {answer['next']}; {then}"
    )


if __name__ == "__main__":
    sys.exit(main())
