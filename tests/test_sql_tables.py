"""``backends._sql_tables`` is exactly the schema the alembic revisions build.

It is the one description of the SQL backend's current schema: every
statement takes its table and column names from it. pytest-alembic's model
check (tests/test_migrations.py) compares tables, columns, types and indexes;
this also compares server defaults, and primary keys and indexes by
inspection, on a SQLite file and on a fresh PostgreSQL database, each brought
from empty through every revision.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gotstate_persist.backends import _sql_tables
from gotstate_persist.migrations import HEAD_REVISION, VERSION_TABLE, current, upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file that does not exist yet, or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tables.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def _ours(name: str | None, type_: str, _parent: object) -> bool:
    """Everything but alembic's own version table."""
    return type_ != "table" or name != VERSION_TABLE


def test_upgraded_schema_is_exactly_what_sql_tables_describes(db_url: str) -> None:
    assert current(db_url) is None
    assert upgrade(db_url) == HEAD_REVISION
    described = _sql_tables.metadata.tables
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            options = {"compare_type": True, "compare_server_default": True, "include_name": _ours}
            context = MigrationContext.configure(conn, opts=options)
            assert compare_metadata(context, _sql_tables.metadata) == []
            inspector = sa.inspect(conn)
            assert set(inspector.get_table_names()) == set(described) | {VERSION_TABLE}
            for name, table in described.items():
                columns = {column["name"] for column in inspector.get_columns(name)}
                assert columns == {column.name for column in table.c}, name
                primary_key = inspector.get_pk_constraint(name)["constrained_columns"]
                assert primary_key == [column.name for column in table.primary_key], name
                indexes = {
                    (index["name"], tuple(index["column_names"]))
                    for index in inspector.get_indexes(name)
                }
                assert indexes == {
                    (index.name, tuple(column.name for column in index.columns))
                    for index in table.indexes
                }, name
    finally:
        engine.dispose()


def test_the_comparison_sees_a_server_default_the_revisions_lack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No rubber stamp: a default alembic's model check ignores is a difference here."""
    url = f"sqlite:///{tmp_path / 'tables.db'}"
    upgrade(url)
    retention = _sql_tables.namespaces.c.retention
    monkeypatch.setattr(retention, "server_default", sa.DefaultClause("prune-oldest"))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            options = {"compare_server_default": True, "include_name": _ours}
            context = MigrationContext.configure(conn, opts=options)
            differences = compare_metadata(context, _sql_tables.metadata)
    finally:
        engine.dispose()
    assert [(change[0][0], change[0][3]) for change in differences] == [
        ("modify_default", "retention")
    ]
