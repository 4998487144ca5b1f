"""The migrate, reseal and verify commands on a real SQLite store."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import gotstate_persist as gp
from gotstate_persist.cli import main

APP = textwrap.dedent(
    """
    import msgspec
    import gotstate_persist as gp

    class OrderV1(msgspec.Struct):
        id: str

    class OrderV2(msgspec.Struct):
        id: str
        lines: int

    def formats():
        registry = gp.FormatRegistry()
        registry.register(OrderV1, kind="order")
        registry.register(OrderV2, kind="order", version=2, upcast=lambda d: {**d, "lines": 0})
        return registry

    registry = formats()
    not_a_registry = 42
    """
)


class OrderV1(msgspec.Struct):
    id: str


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "gsp_cli_app.py").write_text(APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("gsp_cli_app", None)


def _fill(url: str, keys: gp.KeyRing, count: int) -> None:
    formats = gp.FormatRegistry()
    formats.register(OrderV1, kind="order")
    with gp.open_store(url, keyring=keys, formats=formats) as store:
        for i in range(count):
            store.save(f"o{i}", OrderV1(str(i)))


def test_migrate_then_reseal_then_verify(
    app: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    keys = gp.KeyRing.generate()
    _fill(url, keys, 4)
    old = keys.primary_id
    new = keys.rotate()
    key_file = tmp_path / "keys.json"
    key_file.write_text(keys.export())
    common = ["--keys", str(key_file)]
    migrate = ["migrate", url, "--kind", "order", "--formats", "gsp_cli_app:formats", *common, "-A"]

    assert main([*migrate, "--dry-run"]) == 0
    assert "scanned 4, would rewrite 4, 0 already current, 0 failed" in capsys.readouterr().out
    assert main(["verify", url, *common]) == 0
    assert f"records per key id: 0x{old:08x}: 4" in capsys.readouterr().out

    assert main(migrate) == 0
    assert "scanned 4, rewrote 4, 0 already current, 0 failed" in capsys.readouterr().out
    assert main(["verify", url, *common]) == 0
    assert f"records per key id: 0x{new:08x} (primary): 4" in capsys.readouterr().out
    assert main(["reseal", url, *common, "--all-namespaces"]) == 0  # migrate already resealed
    assert "rewrote 0, 4 already current" in capsys.readouterr().out

    formats = __import__("gsp_cli_app").registry
    with gp.open_store(url, keyring=keys, formats=formats) as store:
        assert [r.format_version for r in store.versions("o1")] == [2]
        assert store.load("o1") == formats.type_for("order", 2)("1", 0)


def test_reseal_moves_records_off_a_rotated_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    keys = gp.KeyRing.generate()
    _fill(url, keys, 3)
    old = keys.primary_id
    keys.rotate()
    key_file = tmp_path / "keys.json"
    key_file.write_text(keys.export())
    assert main(["reseal", url, "--keys", str(key_file), "--namespace", "default"]) == 0
    assert "scanned 3, rewrote 3, 0 already current, 0 failed" in capsys.readouterr().out
    keys.retire(old)
    key_file.write_text(keys.export())
    assert main(["verify", url, "--keys", str(key_file)]) == 0
    assert "3 of 3 records verified" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("formats", "message"),
    [
        ("no_colon", "MODULE:ATTRIBUTE"),
        ("gsp_missing_module:formats", "cannot import"),
        ("gsp_cli_app:not_a_registry", "not a gotstate_persist.FormatRegistry"),
    ],
)
def test_migrate_refuses_bad_formats(
    app: Path, tmp_path: Path, formats: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    keys = gp.KeyRing.generate()
    _fill(url, keys, 1)
    key_file = tmp_path / "keys.json"
    key_file.write_text(keys.export())
    args = ["migrate", url, "--kind", "order", "--formats", formats, "--keys", str(key_file), "-A"]
    assert main(args) == 2
    assert message in capsys.readouterr().err
