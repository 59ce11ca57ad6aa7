"""``orch/runtime`` overrides Pykka's private hooks: they are pinned here.

Pykka may change a private hook in any release without notice. The runtime's were
read against the sources of every version in ``CHECKED_VERSIONS`` (the hooks below
are the same in all of them; 4.4.2 only made ``ActorRef`` hold its actor weakly,
which the pooled inbox's reference to its actor makes harmless) and the suite was run
on the newest. Any other version fails here first, with what to check.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.metadata
import inspect
import pkgutil
import queue
from pathlib import Path

import pykka
import pytest
from packaging.requirements import Requirement
from pykka.messages import ProxyCall

import orch
from orch.runtime import GatedActor, PooledActor

CHECKED_VERSIONS = (
    "4.1.0",
    "4.1.1",
    "4.1.2",
    "4.2.0",
    "4.3.0",
    "4.4.0",
    "4.4.1",
    "4.4.2",
    "4.5.0",
)

#: Every private hook of ``pykka.Actor`` the runtime overrides or calls, with the
#: parameters it relies on (``PooledActor._handle_envelope`` redoes
#: ``_actor_loop_running`` for one envelope, so that one is pinned too).
HOOKS = {
    "_create_actor_inbox": [],
    "_start_actor_loop": ["self"],
    "_actor_loop_setup": ["self"],
    "_actor_loop_running": ["self"],
    "_actor_loop_teardown": ["self"],
    "_handle_receive": ["self", "message"],
    "_handle_failure": ["self", "exception_type", "exception_value", "traceback"],
}

ROOT = Path(orch.__file__).parent
SETUP_CFG = ROOT.parent / "setup.cfg"


def _what_to_check(installed: str) -> str:
    return (
        f"Pykka {installed} is installed, but orch/runtime overrides Pykka's private "
        f"hooks ({', '.join(sorted(HOOKS))}, and sends pykka.messages.ProxyCall) and "
        f"was checked only against Pykka {', '.join(CHECKED_VERSIONS)}. Read what the "
        "new version changed in pykka/_actor.py, _threading.py, _ref.py, _envelope.py "
        "and messages.py against orch/runtime/pool.py, actor.py, gate.py and proxy.py, "
        "run the whole suite, then add the version to CHECKED_VERSIONS here and to the "
        "pykka pin in setup.cfg."
    )


def test_the_installed_pykka_is_one_the_runtime_was_checked_against():
    installed = importlib.metadata.version("pykka")
    assert installed in CHECKED_VERSIONS, _what_to_check(installed)


def test_the_pin_in_setup_cfg_admits_exactly_the_checked_minor_versions():
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    requirements = [
        Requirement(line)
        for line in config["options"]["install_requires"].splitlines()
        if line.strip()
    ]
    (pin,) = [r.specifier for r in requirements if r.name == "pykka"]
    assert all(pin.contains(v) for v in CHECKED_VERSIONS), f"setup.cfg's pin {pin} refuses some"
    newest = max(CHECKED_VERSIONS, key=lambda v: tuple(map(int, v.split("."))))
    major, minor, _ = map(int, newest.split("."))
    assert not pin.contains(f"{major}.{minor + 1}.0"), (
        f"setup.cfg's pin {pin} admits Pykka {major}.{minor + 1}, which nobody checked"
    )


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_the_runtime_relies_on_is_still_in_pykka(hook):
    installed = importlib.metadata.version("pykka")
    found = getattr(pykka.ThreadingActor, hook, None)
    assert found is not None, f"pykka.Actor.{hook} is gone. " + _what_to_check(installed)
    parameters = list(inspect.signature(found).parameters)
    assert parameters == HOOKS[hook], (
        f"pykka.Actor.{hook} now takes {parameters}, not {HOOKS[hook]}. "
        + _what_to_check(installed)
    )


def test_the_messages_and_inboxes_the_runtime_relies_on_are_as_checked():
    call = ProxyCall(attr_path=("m",), args=(1,), kwargs={"k": 2})
    assert (call.attr_path, call.args, call.kwargs) == (("m",), (1,), {"k": 2})
    # The gate counts a plain ThreadingActor's unfinished messages on its inbox, and
    # marks them done itself: Pykka's loop must not (task_done would go negative).
    assert isinstance(pykka.ThreadingActor._create_actor_inbox(), queue.Queue)
    assert "task_done" not in inspect.getsource(pykka.Actor._actor_loop_running)


def _private_hooks_of(cls: type) -> set[str]:
    """Names ``cls`` defines itself that override a private attribute of Pykka's actor."""
    return {
        name
        for name in vars(cls)
        if name.startswith("_")
        and not name.startswith("__")
        and callable(getattr(pykka.ThreadingActor, name, None))
    }


def test_the_pinned_hooks_are_all_the_runtime_overrides():
    overridden = _private_hooks_of(PooledActor) | _private_hooks_of(GatedActor)
    assert overridden <= set(HOOKS), f"pin these too: {sorted(overridden - set(HOOKS))}"


def _orch_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(orch.__path__, "orch.")]


def test_nothing_outside_the_runtime_overrides_a_pykka_private_hook():
    offenders = []
    for name in _orch_modules():
        if name.startswith("orch.runtime"):
            continue
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if (
                isinstance(cls, type)
                and issubclass(cls, pykka.Actor)
                and cls.__module__ == name
                and (hooks := _private_hooks_of(cls))
            ):
                offenders.append(f"{name}.{cls.__name__}: {sorted(hooks)}")
    assert offenders == [], "only orch/runtime may override Pykka's private hooks"


def _pykka_internals_used(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pykka."):
            if node.module != "pykka.typing":
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [
                f"import {a.name}"
                for a in node.names
                if a.name.startswith("pykka.") and a.name != "pykka.typing"
            ]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "pykka"
            and (node.attr.startswith("_") or node.attr == "messages")
        ):
            found.append(f"pykka.{node.attr}")
    return found


def test_nothing_outside_the_runtime_imports_pykka_internals():
    offenders = {
        str(path.relative_to(ROOT.parent)): used
        for path in sorted(ROOT.rglob("*.py"))
        if "runtime" not in path.relative_to(ROOT).parts and (used := _pykka_internals_used(path))
    }
    assert offenders == {}, "only orch/runtime may use Pykka's internals"
