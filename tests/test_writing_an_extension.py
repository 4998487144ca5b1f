"""docs/writing-an-extension.md and examples/extensions, installed as a real third-party package.

``make install`` installs the examples editable (the ``examples`` dependency
group in pyproject.toml, locked in uv.lock; by hand: ``pip install -e
examples/extensions``). These tests check that the four examples are found
through the ``gotstate_persist.extensions`` entry points alone, that the
guide's walk-through runs and does what the guide says, and that every code
block of the guide is the examples' real code (which their own tests run
through ``ExtensionTests``). Without the examples installed they fail (never
skip) and say how to install them.
"""

from __future__ import annotations

import re
import runpy
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest

import gotstate_persist as gp

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "writing-an-extension.md"
EXAMPLES = ROOT / "examples" / "extensions"
GROUP = "gotstate_persist.extensions"
NAMES = {
    "throttle": ("gotstate_persist_examples.throttle:Throttle", "event_processing"),
    "audit": ("gotstate_persist_examples.audit:Audit", "state_behavior"),
    "scratch": ("gotstate_persist_examples.scratch:Scratch", "persistence"),
    "site-defaults": ("gotstate_persist_examples.defaults:SiteDefaults", "configuration"),
}
NOT_INSTALLED = (
    "the example extensions gotstate-persist-examples (examples/extensions) are not installed "
    "in this environment: run `make install`, which installs them editable from uv.lock "
    "(or, by hand, `pip install -e examples/extensions`)"
)


def _entry_point(name: str) -> EntryPoint:
    for entry_point in entry_points(group=GROUP, name=name):
        return entry_point
    pytest.fail(NOT_INSTALLED, pytrace=False)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", GUIDE.read_text("utf-8"), re.M | re.S)


def test_entry_points_are_installed() -> None:
    for name, (value, _category) in NAMES.items():
        entry_point = _entry_point(name)
        assert entry_point.value == value
        assert entry_point.dist is not None
        assert entry_point.dist.name == "gotstate-persist-examples"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_registered_by_entry_point_name(store: gp.Store, name: str) -> None:
    _entry_point(name)
    reg = store.extensions.register(name)
    assert (reg.name, reg.category, reg.target) == (name, NAMES[name][1], name)
    assert reg.location.distribution == "gotstate-persist-examples"
    assert "gotstate_persist_examples/__init__.py" in reg.files


def test_walk_through_does_what_the_guide_says(tmp_path: Path, keyring: gp.KeyRing) -> None:
    _entry_point("throttle")
    quickstart = runpy.run_path(str(EXAMPLES / "quickstart.py"))
    seen: dict[str, Any] = quickstart["walk_through"](f"sqlite:///{tmp_path / 's.db'}", keyring)
    assert (seen["first"], seen["repeat"]) == (True, False)  # the repeat was dropped
    assert seen["payment"] == {"visits": 1, "entered_by": "ada", "entered_on": "checkout"}
    assert (seen["held"], seen["override"], seen["state"]) == (False, True, "picking")
    assert (seen["receipt"].order, seen["receipt"].currency) == ("order-42", "EUR")
    assert seen["defaults"] == {"endpoint": "https://pay.example.com", "timeout_s": 2.0}
    assert seen["problems"] == ["$.endpoint: must be an https:// URL"]
    assert seen["throttle"].calls == 4 and seen["throttle"].failures == 0
    assert seen["audit"].ok == seen["audit"].calls > 0


def _example_sources() -> dict[str, str]:
    files = [*EXAMPLES.rglob("*.py"), EXAMPLES / "pyproject.toml"]
    return {str(f.relative_to(EXAMPLES)): f.read_text("utf-8") for f in files}


@pytest.mark.parametrize("language", ["python", "toml"])
def test_every_block_is_the_examples_real_code(language: str) -> None:
    blocks = _blocks(language)
    assert blocks, f"no {language} blocks found in {GUIDE.name}"
    sources = _example_sources()
    for block in blocks:
        found = [name for name, text in sources.items() if block in text]
        assert found, (
            f"a {language} block of {GUIDE.name} is in no file of examples/extensions:\n{block}"
        )


def test_the_guide_has_no_other_code_blocks() -> None:
    fences = re.findall(r"^```(\w*)$", GUIDE.read_text("utf-8"), re.M)
    opening = fences[::2]
    assert set(opening) <= {"python", "toml"}, opening
