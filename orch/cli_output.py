"""How the command-line client prints answers: tables, records, event lines, JSON.

Kept apart from ``orch/cli.py``, which parses commands and calls the server, so that
a command reads as what it asks and new commands print the same way. Each
``print_*`` that ends a command returns its exit status, 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any, TextIO


def event_line(event: Mapping[str, Any]) -> str:
    extra = " ".join(f"{k}={cell(v)}" for k, v in event.items() if k not in ("seq", "type", "at"))
    return f"{event['seq']:>6}  {when(event.get('at'))}  {event['type']:<22} {extra}".rstrip()


def print_json(answer: Any, out: TextIO) -> int:
    print(json.dumps(answer, indent=2), file=out)
    return 0


def print_status(
    answer: Mapping[str, Any], kind: str, name: str, args: argparse.Namespace, out: TextIO
) -> int:
    if args.json:
        return print_json(answer, out)
    print(f"{kind} {name}: {answer['status']}", file=out)
    return 0


def print_record(
    record: Mapping[str, Any],
    args: argparse.Namespace,
    out: TextIO,
    times: Iterable[str] = ("registered_at",),
) -> int:
    """One agent or task as ``key  value`` lines; nested objects as compact JSON."""
    if args.json:
        return print_json(record, out)
    time_keys = set(times)
    width = max(len(k) for k in record)
    for key, value in record.items():
        shown = when(value) if key in time_keys else cell(value)
        print(f"{key:<{width}}  {shown}", file=out)
    return 0


def print_table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip(), file=out)


def flatten(value: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            yield from flatten(item, name + ".")
        else:
            yield name, item


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def when(epoch_s: Any) -> str:
    if not isinstance(epoch_s, int | float) or isinstance(epoch_s, bool) or epoch_s <= 0:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch_s).astimezone()
    return moment.isoformat(timespec="seconds")
