"""The example plugin in examples/plugin_backend, installed as a real third-party package.

``make install`` installs it editable (the ``plugin`` dependency group in
pyproject.toml, locked in uv.lock; by hand: ``pip install -e examples/plugin_backend``). These
tests then check that gotstate-persist finds the ``dbm`` scheme through the
``gotstate_persist.backends`` entry point alone, that the plugin passes the
conformance suite, and that a whole store works on it. Without the plugin they
fail (never skip) and say how to install it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
from gotstate.core.events import Event
from order_workflow import build_order_machine, get_data, set_data

import gotstate_persist as gp
from gotstate_persist.backends import Backend, known_schemes, open_backend
from gotstate_persist.cli import main as cli
from gotstate_persist.testing import BackendTests

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "writing-a-backend.md"
GROUP = "gotstate_persist.backends"
SCHEME = "dbm"
NOT_INSTALLED = (
    "the example plugin gotstate-persist-dbm (examples/plugin_backend) is not installed "
    "in this environment: run `make install`, which installs it editable from uv.lock "
    "(or, by hand, `pip install -e examples/plugin_backend`)"
)


def _entry_point() -> EntryPoint:
    for entry_point in entry_points(group=GROUP, name=SCHEME):
        return entry_point
    pytest.fail(NOT_INSTALLED, pytrace=False)


def _dbm_url(directory: Path, name: str = "state") -> str:
    _entry_point()
    return f"dbm://{directory / name}"


def test_entry_point_is_discoverable() -> None:
    entry_point = _entry_point()
    assert entry_point.value == "gotstate_persist_dbm:DbmBackend"
    assert entry_point.dist is not None
    assert entry_point.dist.name == "gotstate-persist-dbm"
    assert issubclass(entry_point.load(), Backend)


def test_known_schemes_lists_the_plugin() -> None:
    _entry_point()
    assert SCHEME in known_schemes()


def test_open_backend_finds_the_plugin_without_registration(tmp_path: Path) -> None:
    url = _dbm_url(tmp_path)
    with open_backend(url) as backend:
        assert type(backend) is _entry_point().load()
    # In a fresh interpreter nobody has imported or registered anything: the
    # scheme is resolved, and the plugin imported, on first use.
    script = (
        "import sys\n"
        "from gotstate_persist.backends import open_backend\n"
        "assert 'gotstate_persist_dbm' not in sys.modules\n"
        f"backend = open_backend({url!r})\n"
        "print(type(backend).__module__, type(backend).__name__, backend.capabilities)\n"
        "backend.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gotstate_persist_dbm._backend DbmBackend ")
    assert "cross_process=False" in done.stdout


class TestDbmPluginConformance(BackendTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        with open_backend(_dbm_url(tmp_path, "conformance")) as opened:
            yield opened


def test_save_and_restore_a_machine_through_open_store(tmp_path: Path) -> None:
    url = _dbm_url(tmp_path)
    keys = gp.KeyRing.generate()
    machine = build_order_machine()
    machine.start()
    for name in ("start", "checkout"):
        machine.process_event(Event(name))
    set_data(machine, "payment", "total", Decimal("59.90"))
    with gp.open_store(url, namespace="orders", keyring=keys) as store:
        first = store.save_machine("order-42", machine)
        assert (first.key, first.version, first.namespace) == ("order-42", 1, "orders")

    # A new store on the same files: everything comes back from disk.
    entered: list[str] = []
    fresh = build_order_machine(entered)
    with gp.open_store(url, namespace="orders", keyring=keys) as store:
        ref = store.restore_machine("order-42", fresh)
        assert ref == first
        assert fresh.current_state.name == "payment"
        assert get_data(fresh, "payment") == {"total": Decimal("59.90")}
        assert entered == []  # restore runs no entry actions
        fresh.process_event(Event("pay"))
        assert fresh.current_state.name == "picking"
        second = store.save_machine("order-42", fresh, expected_version=1)
        with pytest.raises(gp.VersionConflict):
            store.save_machine("order-42", fresh, expected_version=1)
        assert [r.version for r in store.versions("order-42")] == [1, 2]
        assert store.keys(prefix="order-") == ["order-42"]
        assert store.usage().records == 2

        older = build_order_machine()
        store.restore_machine("order-42", older, version=1)
        assert older.current_state.name == "payment"

        assert store.delete("order-42") == 2
        with pytest.raises(gp.NotFound):
            store.restore_machine("order-42", build_order_machine())
        again = store.save_machine("order-42", fresh)
        assert again.version == second.version + 1  # versions are never reused

    with gp.open_store(url, namespace="other", keyring=keys) as store:
        assert store.keys() == []  # namespaces isolate


def test_cli_copies_into_the_plugin_and_verifies_it(tmp_path: Path) -> None:
    destination = _dbm_url(tmp_path)
    source = f"sqlite:///{tmp_path / 'source.db'}"
    keys = gp.KeyRing.generate()
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys.export(), encoding="utf-8")
    machine = build_order_machine()
    machine.start()
    with gp.open_store(source, namespace="orders", keyring=keys) as store:
        store.save_machine("a", machine)
        machine.process_event(Event("start"))
        store.save_machine("a", machine)

    assert cli(["copy", source, destination, "--keys", str(keys_file), "--all-namespaces"]) == 0
    assert cli(["verify", destination, "--keys", str(keys_file)]) == 0
    fresh = build_order_machine()
    with gp.open_store(destination, namespace="orders", keyring=keys) as store:
        assert store.restore_machine("a", fresh).version == 2
    assert fresh.current_state.name == "cart"


def _snippets(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", GUIDE.read_text("utf-8"), re.M | re.S)


def test_guide_snippets_run_and_pass_their_tests(tmp_path: Path) -> None:
    """docs/writing-a-backend.md: its backend passes its own conformance test file."""
    python = _snippets("python")
    assert python, "no python snippets found in the guide"
    for snippet in python:
        name = re.match(r"# (\w+\.py)\n", snippet)
        assert name, f"a python snippet in {GUIDE.name} does not start with '# file.py'"
        (tmp_path / name.group(1)).write_text(snippet, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
    # the entry-point snippet is the example plugin's real declaration
    (toml,) = _snippets("toml")
    assert toml in (ROOT / "examples" / "plugin_backend" / "pyproject.toml").read_text("utf-8")
