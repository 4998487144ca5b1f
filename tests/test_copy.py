"""Cross-backend copy: verbatim, verified, resumable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from gotstate.core.events import Event
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist._copy import copy_records
from gotstate_persist.backends import open_backend
from gotstate_persist.cli import main as cli


@pytest.fixture
def source(tmp_path: Path, keyring: gp.KeyRing) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    machine = build_order_machine()
    machine.start()
    for namespace in ("orders", "archive"):
        with gp.open_store(url, namespace=namespace, keyring=keyring) as store:
            for key in ("a", "b"):
                store.save_machine(key, machine)
                machine.process_event(Event("start"))
                store.save_machine(key, machine)
    return url


def _blobs(url: str) -> dict[tuple[str, str, int], tuple[bytes, int]]:
    with open_backend(url) as backend:
        return {
            (ns, key, info.version): (backend.get(ns, key, info.version)[1], info.created_at_us)
            for ns in backend.namespaces()
            for key in backend.keys(ns)
            for info in backend.versions(ns, key)
        }


def test_copy_is_verbatim_and_restorable(source: str, tmp_path: Path, keyring: gp.KeyRing) -> None:
    destination = f"sqlite:///{tmp_path / 'dest.db'}"
    seen: list[tuple[int, int]] = []
    with open_backend(source) as src, open_backend(destination) as dst:
        report = copy_records(src, dst, keyring, progress=lambda d, t: seen.append((d, t)))
    assert (report.copied, report.skipped, report.failed) == (8, 0, [])
    assert seen[-1] == (8, 8)
    assert _blobs(destination) == _blobs(source)
    fresh = build_order_machine()
    with gp.open_store(destination, namespace="archive", keyring=keyring) as store:
        store.restore_machine("b", fresh)
    assert fresh.current_state.name == "cart"


def test_copy_resumes(source: str, tmp_path: Path, keyring: gp.KeyRing) -> None:
    destination = f"sqlite:///{tmp_path / 'dest.db'}"
    with open_backend(source) as src, open_backend(destination) as dst:
        first = copy_records(src, dst, keyring, namespaces=["orders"])
        again = copy_records(src, dst, keyring)
    assert (first.copied, first.skipped) == (4, 0)
    assert (again.copied, again.skipped) == (4, 4)
    assert _blobs(destination) == _blobs(source)


def test_copy_reports_damaged_records_and_copies_the_rest(
    source: str, tmp_path: Path, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(source.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE gotstate_persist_records SET blob = CAST(substr(blob, 1, 30) AS BLOB) "
            "WHERE namespace = 'orders' AND key = 'a' AND version = 2"
        )
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keyring.export())
    destination = f"sqlite:///{tmp_path / 'dest.db'}"
    assert cli(["copy", source, destination, "--keys", str(keys_file), "--all-namespaces"]) == 1
    out = capsys.readouterr()
    assert "FAILED orders/a version 2: IntegrityError" in out.out
    assert "7 copied, 0 already present, 1 failed" in out.out
    assert "copying: 8/8" in out.err
    with open_backend(destination) as dst:
        assert [i.version for i in dst.versions("orders", "a")] == [1]


def test_copy_with_wrong_keys_copies_nothing(source: str, tmp_path: Path) -> None:
    destination = f"sqlite:///{tmp_path / 'dest.db'}"
    with open_backend(source) as src, open_backend(destination) as dst:
        report = copy_records(src, dst, gp.KeyRing.generate())
        assert report.copied == 0 and len(report.failed) == 8
        assert dst.namespaces() == []


def test_copy_keeps_numbering_across_deleted_versions(
    source: str, tmp_path: Path, keyring: gp.KeyRing
) -> None:
    with gp.open_store(source, namespace="orders", keyring=keyring) as store:
        store.delete("a", version=1)
    destination = f"file://{tmp_path / 'dest-files'}"
    with open_backend(source) as src, open_backend(destination) as dst:
        report = copy_records(src, dst, keyring)
        assert report.failed == [] and report.copied == 7
        assert [i.version for i in dst.versions("orders", "a")] == [2]
    with gp.open_store(destination, namespace="orders", keyring=keyring) as store:
        fresh = build_order_machine()
        store.restore_machine("a", fresh)
        assert fresh.current_state.name == "cart"
        assert store.save_machine("a", fresh).version == 3
