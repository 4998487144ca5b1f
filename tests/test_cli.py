"""The gotstate-persist command, run in-process and as a real subprocess."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from gotstate.core.events import Event
from order_workflow import build_order_machine, set_data

import gotstate_persist as gp
from gotstate_persist.cli import main


@pytest.fixture
def populated(sqlite_url: str, keyring: gp.KeyRing, tmp_path: Path) -> tuple[str, Path]:
    machine = build_order_machine()
    machine.start()
    machine.process_event(Event("start"))
    set_data(machine, "cart", "total", Decimal("9.99"))
    with gp.open_store(sqlite_url, namespace="orders", keyring=keyring) as store:
        store.save_machine("order-42", machine)
        machine.process_event(Event("checkout"))
        store.save_machine("order-42", machine)
        store.save_machine("order-43", machine)
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keyring.export())
    return sqlite_url, keys_file


def test_keys_generate_prints_a_loadable_keyring(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "generate", "--algorithm", "ed25519"]) == 0
    ring = gp.KeyRing.load(capsys.readouterr().out)
    assert ring.algorithm == "ed25519"


def test_ls(populated: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = populated
    assert main(["ls", url]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert lines[0][:4] == ["NAMESPACE", "KEY", "VERSIONS", "NEWEST"]
    assert lines[1][:5] == ["orders", "order-42", "2", "2", "gotstate.machine"]
    assert lines[2][:2] == ["orders", "order-43"]


def test_show_decodes_the_snapshot(
    populated: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, keys = populated
    code = main(["show", url, "order-42", "--namespace", "orders", "--keys", str(keys)])
    assert code == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 2
    assert shown["record"]["current_state"] == "payment"
    assert shown["record"]["state_data"]["cart"] == {"total": {"$decimal": "9.99"}}
    assert shown["sealed_with"].startswith("aes-256-gcm key 0x")
    main(["show", url, "order-42", "--namespace", "orders", "--keys", str(keys), "--version", "1"])
    assert json.loads(capsys.readouterr().out)["record"]["current_state"] == "cart"


def test_show_reads_keys_from_environment(
    populated: tuple[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, keys = populated
    monkeypatch.setenv("GOTSTATE_PERSIST_KEYS", keys.read_text())
    assert main(["show", url, "order-43", "--namespace", "orders"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] == "order-43"
    monkeypatch.delenv("GOTSTATE_PERSIST_KEYS")
    assert main(["show", url, "order-43", "--namespace", "orders"]) == 2
    assert "keys generate" in capsys.readouterr().err


def test_verify_ok_then_tampered(
    populated: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, keys = populated
    assert main(["verify", url, "--keys", str(keys)]) == 0
    assert "3 of 3 records verified, 0 failed" in capsys.readouterr().out
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE gotstate_persist_records SET blob = "
            "CAST(substr(blob, 1, 20) || X'00' || substr(blob, 22) AS BLOB) "
            "WHERE key='order-42' AND version=1"
        )
    assert main(["verify", url, "--keys", str(keys)]) == 1
    out = capsys.readouterr().out
    assert "FAILED orders/order-42 (2 versions)" in out
    assert "version 1: IntegrityError" in out
    assert "ok     orders/order-43" in out
    assert "2 of 3 records verified, 1 failed" in out


def test_wrong_keys_fail_verification(
    populated: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = populated
    other = tmp_path / "other.json"
    other.write_text(gp.KeyRing.generate().export())
    assert main(["verify", url, "--keys", str(other)]) == 1
    assert "0 of 3 records verified, 3 failed" in capsys.readouterr().out


def test_missing_database_is_reported_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    assert main(["ls", f"sqlite:///{missing}"]) == 2
    assert "no SQLite database" in capsys.readouterr().err
    assert not missing.exists()


def test_console_script_runs(populated: tuple[str, Path]) -> None:
    url, keys = populated
    exe = Path(sys.executable).parent / "gotstate-persist"
    result = subprocess.run(
        [str(exe), "verify", url, "--keys", str(keys)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "3 of 3 records verified" in result.stdout


def test_malformed_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "sqlite"]) == 2
    assert "not a store URL" in capsys.readouterr().err


def test_verify_reports_names_no_writer_could_have_stored(
    populated: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, keys = populated
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "UPDATE gotstate_persist_records SET key = 'bad\x01key' WHERE key = 'order-43'"
        )
    assert main(["verify", url, "--keys", str(keys)]) == 1
    out = capsys.readouterr().out
    assert "invalid key" in out and "ok     orders/order-42" in out


def test_read_commands_never_touch_a_foreign_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app_db = tmp_path / "app.db"
    with sqlite3.connect(app_db) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    before = app_db.read_bytes()
    assert main(["ls", f"sqlite:///{app_db}"]) == 1
    assert "holds no gotstate-persist store" in capsys.readouterr().err
    assert app_db.read_bytes() == before
    with sqlite3.connect(app_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_db_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    assert main(["db", "upgrade", url]) == 0
    assert "schema at v0.3.0.a (head v0.3.0.a)" in capsys.readouterr().out
    assert main(["db", "current", url]) == 0
    assert capsys.readouterr().out.strip() == "v0.3.0.a"
    assert main(["db", "history"]) == 0
    assert capsys.readouterr().out.split() == ["v0.1.0.a", "v0.2.0.a", "v0.3.0.a", "(head)"]
    assert main(["db", "current", "memory://x"]) == 2
