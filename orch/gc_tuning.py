"""Garbage-collector thresholds for a process whose heap is mostly long-lived records.

Why: a control plane keeps every agent and queued task in memory for hours, so its
heap is large and almost never garbage, yet CPython's default thresholds
``(700, 10, 10)`` still traverse all of it in a full collection once every ten
middle-generation collections (when the heap has also grown by a quarter). With
10,000 agents and 100,000 queued tasks a full collection took 0.34 s, and assigning
tasks as fast as the Scheduler can set one off about every 1.2 s: 28% of the time,
and a pause every heartbeat waits behind (bench/README.md). Collecting the whole heap
ten times less often, ``(700, 10, 100)``, still reclaims every cycle, but amortises the
traversal over ten times the work; young collections, which find nearly all garbage
and look at a few hundred objects each, are left as they are.

Thresholds belong to the process, not to one ``Orchestrator``. So the service sets
them (``ORCH_GC_THRESHOLDS``, ``config.SERVICE_GC_THRESHOLDS`` by default) and an embedding
program leaves the interpreter's own unless it asks (``Settings.gc_thresholds``).
While several orchestrators hold thresholds, the latest one applied is in force; the
interpreter's original thresholds come back when the last of them stops.
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0
_original: tuple[int, ...] | None = None


def hold(thresholds: tuple[int, int, int]) -> None:
    """Apply ``thresholds`` until a matching ``release``."""
    global _holders, _original
    with _lock:
        if _holders == 0:
            _original = gc.get_threshold()
        _holders += 1
        gc.set_threshold(*thresholds)


def release() -> None:
    """End one ``hold``; the last one restores the thresholds from before the first."""
    global _holders, _original
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0 and _original is not None:
            gc.set_threshold(*_original)
            _original = None
