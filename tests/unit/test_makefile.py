"""``make run`` installs the service alone; ``make test`` installs the test extra too."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def planned(target: str) -> list[str]:
    """The commands ``make`` would run for ``target`` from scratch (``-n -B``: none run)."""
    answer = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.splitlines()


def installs(commands: list[str]) -> list[str]:
    return [line for line in commands if "pip install" in line and "--upgrade pip" not in line]


def test_make_run_installs_the_package_without_its_test_extra():
    [install] = installs(planned("run"))
    assert install.endswith("pip install -q -e .")
    assert "[test]" not in " ".join(planned("run"))


def test_make_test_installs_the_test_extra():
    assert [line.endswith("pip install -q -e '.[test]'") for line in installs(planned("test"))] == [
        True
    ]
