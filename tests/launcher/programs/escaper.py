"""A worker that first starts a helper in a session of its own, as a daemon does.

The helper is out of the worker's process group, so neither the group signal nor
the death signal reaches it; its pid is written to ``$ESCAPER_PID_FILE``.
"""

import os
import subprocess
import sys
from pathlib import Path

helper = subprocess.Popen(
    [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"], start_new_session=True
)
Path(os.environ["ESCAPER_PID_FILE"]).write_text(str(helper.pid))
worker = Path(__file__).resolve().parents[3] / "examples" / "worker.py"
os.execv(sys.executable, [sys.executable, str(worker)])
