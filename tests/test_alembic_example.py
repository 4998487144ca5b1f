"""examples/alembic_app: a data-format migration inside an application's alembic history."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "alembic_app" / "run.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gsp_alembic_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_one_history_orders_schema_and_data_changes(
    database: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the example sets the variable itself: setenv first, so that monkeypatch records
    # (and restores at teardown) that it was unset, not only when it was set before
    monkeypatch.setenv("GOTSTATE_PERSIST_KEYS", "")
    monkeypatch.delenv("GOTSTATE_PERSIST_KEYS")
    url = (
        f"sqlite:///{tmp_path / 'app.db'}"
        if database == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    assert _example().main(url) == [(1, 2)]  # same logical version, new format
    if database == "sqlite":
        with sqlite3.connect(tmp_path / "app.db") as conn:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(app_orders)")]
            heads = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        assert columns == ["id", "total_cents", "currency"]
        assert heads == [("app_0002",)]
