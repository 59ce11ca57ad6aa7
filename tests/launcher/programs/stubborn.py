"""A program that ignores SIGTERM: only the launcher's SIGKILL after the grace ends it."""

import signal
import threading

signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
threading.Event().wait()
