"""Schema migrations: alembic's own checks, released databases, and living next to an app.

Every test runs on real databases: SQLite files in ``tmp_path`` and a fresh
database on the session's PostgreSQL server (``pg_url``, see tests/_postgres.py).

pytest-alembic's plugin is disabled for the whole suite (``-p no:pytest_alembic``
in pyproject.toml), so its built-in checks are called here as plain functions
on a runner built from the same three fixtures the plugin would use:
``alembic_config`` (gotstate-persist's alembic ``Config``, built in code),
``alembic_engine`` (a *connection*: our env.py takes the connection handed
over in ``config.attributes["connection"]``, which is where pytest-alembic puts
whatever ``alembic_engine`` gives) and ``alembic_runner``.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from order_workflow import build_order_machine
from pytest_alembic import runner as alembic_runner_for
from pytest_alembic.config import Config as PytestAlembicConfig
from pytest_alembic.runner import MigrationContext

import gotstate_persist as gp
from gotstate_persist import migrations
from gotstate_persist.cli import main as cli
from gotstate_persist.migrations import (
    HEAD_REVISION,
    REVISIONS,
    VERSION_TABLE,
    check,
    current,
    upgrade,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN_DATABASES = sorted((FIXTURES / "golden_db").glob("*.sqlite"))
GOLDEN_KEYS_FILE = FIXTURES / "golden_envelopes" / "aes-256-gcm.keys.json"
FIRST_REVISION = REVISIONS[0]
UNKNOWN_REVISION = "v9.9.9.z"
APP_REVISION = "app_0001"
OUR_TABLES = {
    VERSION_TABLE,
    "gotstate_persist_records",
    "gotstate_persist_keys",
    "gotstate_persist_namespaces",
    "gotstate_persist_meta",
}


# Databases and raw views of them, without the library.


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file that does not exist yet, or a fresh PostgreSQL one."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _sql(url: str, statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Run one statement in its own committed transaction; return its rows."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params or {})
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _dump(url: str, tables: set[str] | None = None) -> dict[str, Any]:
    """Every column definition and row of ``tables`` (default: all), plus a SQLite file's bytes."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    dump: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            for name in sorted(tables if tables is not None else inspector.get_table_names()):
                if not inspector.has_table(name):
                    dump[name] = None
                    continue
                columns = [(c["name"], str(c["type"])) for c in inspector.get_columns(name)]
                rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()
                dump[name] = (columns, sorted(repr(tuple(row)) for row in rows))
    finally:
        engine.dispose()
    path = _sqlite_path(url)
    if path is not None and tables is None:
        dump["<file bytes>"] = path.read_bytes()
    return dump


def _downgrade(url: str, revision: str) -> None:
    """Run our alembic history down to ``revision`` (there is no public downgrade)."""
    engine = migrations._engine(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(**{migrations._WRITE: True})
            with conn.begin():
                command.downgrade(migrations.alembic_config(conn), revision)
    finally:
        engine.dispose()


# pytest-alembic's built-in checks, on SQLite and on PostgreSQL.


@pytest.fixture
def alembic_config() -> PytestAlembicConfig:
    """gotstate-persist's own alembic Config (script location in the package, no ini)."""
    return PytestAlembicConfig.from_raw_config(migrations.alembic_config())


@pytest.fixture
def alembic_engine(db_url: str) -> Iterator[sa.Connection]:
    """A connection, set up the way migrations.upgrade() sets up its own.

    On SQLite (no transactional DDL in alembic's eyes) the first read autobegins
    a transaction that every later step then joins, so a check runs in one
    transaction, rolled back when the connection closes; on PostgreSQL each
    alembic command commits its own. Either way every step runs for real.
    """
    engine = migrations._engine(db_url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


@pytest.fixture
def alembic_runner(
    alembic_config: PytestAlembicConfig, alembic_engine: sa.Connection
) -> Iterator[MigrationContext]:
    with alembic_runner_for(config=alembic_config, engine=alembic_engine) as context:
        yield context


BUILTIN_CHECKS = (
    "test_single_head_revision",
    "test_upgrade",
    "test_up_down_consistency",
    "test_model_definitions_match_ddl",
)


@pytest.fixture
def alembic_checks(pytestconfig: pytest.Config) -> ModuleType:
    """pytest_alembic.tests, imported once its ``alembic`` marker is known.

    The checks carry ``@pytest.mark.alembic``, which only the (disabled) plugin
    registers; under ``--strict-markers`` the import fails without it.
    """
    pytestconfig.addinivalue_line("markers", "alembic: pytest-alembic's built-in checks")
    from pytest_alembic import tests

    return tests


@pytest.mark.parametrize("name", BUILTIN_CHECKS)
def test_pytest_alembic_builtin_check(
    alembic_runner: MigrationContext, alembic_checks: ModuleType, name: str
) -> None:
    getattr(alembic_checks, name)(alembic_runner)


def test_builtin_model_check_sees_a_table_the_revisions_lack(
    alembic_runner: MigrationContext, alembic_checks: ModuleType
) -> None:
    """The model check is no rubber stamp: metadata ahead of the revisions fails it."""
    from gotstate_persist.backends import _sql_tables

    extra = sa.Table(
        "gotstate_persist_unmigrated", _sql_tables.metadata, sa.Column("id", sa.Integer)
    )
    try:
        with pytest.raises(Exception, match="out of sync"):
            alembic_checks.test_model_definitions_match_ddl(alembic_runner)
    finally:
        _sql_tables.metadata.remove(extra)


def test_revisions_constant_is_alembics_graph() -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert [rev.revision for rev in reversed(list(script.walk_revisions()))] == list(REVISIONS)
    assert script.get_heads() == [HEAD_REVISION]


# The programmatic API.


def test_upgrade_creates_is_idempotent_and_never_downgrades(db_url: str) -> None:
    assert current(db_url) is None
    assert upgrade(db_url, FIRST_REVISION) == FIRST_REVISION
    assert current(db_url) == FIRST_REVISION
    assert _tables(db_url) == OUR_TABLES - {"gotstate_persist_namespaces", "gotstate_persist_meta"}
    assert upgrade(db_url) == HEAD_REVISION
    assert current(db_url) == HEAD_REVISION
    assert _tables(db_url) == OUR_TABLES
    check(db_url)
    before = _dump(db_url)
    assert upgrade(db_url) == HEAD_REVISION
    assert upgrade(db_url, FIRST_REVISION) == HEAD_REVISION  # already past it: left alone
    assert _dump(db_url) == before


def test_upgrade_refuses_an_unknown_target(db_url: str) -> None:
    with pytest.raises(gp.InvalidArgument, match=re.escape(FIRST_REVISION)):
        upgrade(db_url, "v0.3")
    assert current(db_url) is None
    path = _sqlite_path(db_url)
    assert path is None or not path.exists()


def test_concurrent_upgrades_of_a_fresh_database(db_url: str) -> None:
    barrier = threading.Barrier(4)
    results: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(upgrade(db_url))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    # Daemons: without the schema lock the losers can block on each other's
    # uncommitted catalog rows, and a hung thread must fail the test, not the run.
    threads = [threading.Thread(target=run, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [HEAD_REVISION] * 4
    assert _sql(db_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD_REVISION,)]


def test_check_names_the_upgrade_command(db_url: str) -> None:
    upgrade(db_url, FIRST_REVISION)
    with pytest.raises(gp.SchemaOutdated, match="gotstate-persist db upgrade") as info:
        check(db_url)
    display = sa.make_url(db_url).render_as_string(hide_password=True)
    assert f"gotstate-persist db upgrade '{display}'" in str(info.value)
    upgrade(db_url)
    check(db_url)


def test_current_and_check_create_nothing_in_a_missing_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "state.db"
    url = f"sqlite:///{missing}"
    assert current(url) is None
    with pytest.raises(gp.NotFound, match="holds no gotstate-persist store"):
        check(url)
    assert not missing.parent.exists()


def test_current_and_check_leave_a_foreign_database_alone(db_url: str) -> None:
    _sql(db_url, "CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    before = _dump(db_url)
    assert current(db_url) is None
    with pytest.raises(gp.NotFound, match="holds no gotstate-persist store"):
        check(db_url)
    assert _dump(db_url) == before
    assert _tables(db_url) == {"accounts"}


def test_unreachable_database_is_a_backend_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    url = f"sqlite:///{tmp_path / 'dir.db'}"
    for call in (lambda: current(url), lambda: check(url), lambda: upgrade(url)):
        with pytest.raises(gp.BackendError, match=r"dir\.db"):
            call()


def test_messages_mask_the_password(
    pg_url: str, postgres_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    parsed = sa.make_url(pg_url)
    password = str(parsed.password)
    masked = parsed.render_as_string(hide_password=True)
    assert "***" in masked and password not in masked
    upgrade(pg_url, FIRST_REVISION)
    with pytest.raises(gp.SchemaOutdated) as info:
        check(pg_url)
    assert password not in str(info.value)
    assert f"gotstate-persist db upgrade '{masked}'" in str(info.value)
    with pytest.raises(gp.SchemaOutdated) as opened:
        gp.open_store(pg_url, keyring=gp.KeyRing.generate())
    assert password not in str(opened.value) and "***" in str(opened.value)
    assert cli(["db", "check", pg_url]) == 1
    captured = capsys.readouterr()
    assert "SchemaOutdated" in captured.err and masked in captured.err
    assert password not in captured.err + captured.out
    wrong = postgres_server.url(parsed.database, password="wrong-Secret-4711")
    for call in (lambda: current(wrong), lambda: check(wrong), lambda: upgrade(wrong)):
        with pytest.raises(gp.BackendError) as failed:
            call()
        assert "wrong-Secret-4711" not in str(failed.value) and "***" in str(failed.value)


# Released databases.


@pytest.mark.parametrize("database", GOLDEN_DATABASES, ids=[p.stem for p in GOLDEN_DATABASES])
def test_golden_database_upgrades_and_verifies(
    database: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "golden.sqlite"
    shutil.copy(database, copy)
    url = f"sqlite:///{copy}"
    assert current(url) == database.stem
    if database.stem != HEAD_REVISION:
        with pytest.raises(gp.SchemaOutdated, match="gotstate-persist db upgrade"):
            check(url)
        assert copy.read_bytes() == database.read_bytes()  # current() and check() only read
    assert upgrade(url) == HEAD_REVISION
    assert current(url) == HEAD_REVISION
    check(url)
    with sqlite3.connect(copy) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM gotstate_persist_records").fetchone()[0]
        namespaces = [
            row[0]
            for row in conn.execute("SELECT DISTINCT namespace FROM gotstate_persist_records")
        ]
    assert stored > 0 and namespaces
    capsys.readouterr()
    assert cli(["verify", url, "--keys", str(GOLDEN_KEYS_FILE)]) == 0
    assert f"{stored} of {stored} records verified, 0 failed" in capsys.readouterr().out
    keys = gp.KeyRing.load(GOLDEN_KEYS_FILE.read_text())
    for namespace in namespaces:
        with gp.open_store(url, namespace=namespace, keyring=keys) as store:
            assert store.usage(recount=True).drift is None


# Down and up again with data in the database.


def _populate(url: str, keyring: gp.KeyRing) -> dict[str, Any]:
    """Machines in two namespaces, several versions, one deleted; return what a reader sees."""
    seen: dict[str, Any] = {}
    for namespace in ("orders", "audit"):
        with gp.open_store(url, namespace=namespace, keyring=keyring) as store:
            for key in ("m-1", "m-2", "m-3"):
                for _ in range(2):
                    store.save_machine(key, build_order_machine())
            store.delete("m-2", version=1)
            seen[namespace] = _visible(store)
    return seen


def _visible(store: gp.Store) -> dict[str, Any]:
    usage = store.usage()
    return {
        "versions": {
            key: [(ref.version, ref.kind, ref.size) for ref in store.versions(key)]
            for key in store.keys()
        },
        "usage": (usage.bytes, usage.records, usage.keys),
    }


def test_downgrade_and_upgrade_again_keep_the_data(
    db_url: str, keyring: gp.KeyRing, tmp_path: Path
) -> None:
    seen = _populate(db_url, keyring)
    _downgrade(db_url, FIRST_REVISION)
    assert current(db_url) == FIRST_REVISION
    assert "gotstate_persist_namespaces" not in _tables(db_url)
    with pytest.raises(gp.SchemaOutdated):
        gp.open_store(db_url, keyring=keyring)
    assert upgrade(db_url) == HEAD_REVISION
    for namespace, expected in seen.items():
        with gp.open_store(db_url, namespace=namespace, keyring=keyring) as store:
            assert _visible(store) == expected
            recounted = store.usage(recount=True)
            assert recounted.drift is None
            assert (recounted.bytes, recounted.records, recounted.keys) == expected["usage"]
            store.restore_machine("m-1", build_order_machine())
            assert store.save_machine("m-1", build_order_machine()).version == 3
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keyring.export())
    assert cli(["verify", db_url, "--keys", str(keys_file)]) == 0


# An application's own alembic history in the same database.

_APP_ENV = """
import sqlalchemy as sa
from alembic import context

url = context.config.get_main_option("sqlalchemy.url")
engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""

_APP_REVISION = f'''
import sqlalchemy as sa
from alembic import op

revision = "{APP_REVISION}"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "app_orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("total", sa.Integer, nullable=False),
    )


def downgrade():
    op.drop_table("app_orders")
'''


def _app_alembic(tmp_path: Path, url: str) -> AlembicConfig:
    """An application's alembic environment: its own scripts, the default alembic_version."""
    scripts = tmp_path / "app_migrations"
    (scripts / "versions").mkdir(parents=True)
    (scripts / "env.py").write_text(_APP_ENV)
    (scripts / "versions" / f"{APP_REVISION}_orders.py").write_text(_APP_REVISION)
    config = AlembicConfig()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@pytest.mark.parametrize("first", ["application", "gotstate-persist"])
def test_coexists_with_the_applications_alembic_history(
    db_url: str, tmp_path: Path, first: str
) -> None:
    app = _app_alembic(tmp_path, db_url)
    if first == "application":
        command.upgrade(app, "head")
        assert upgrade(db_url) == HEAD_REVISION
    else:
        assert upgrade(db_url) == HEAD_REVISION
        command.upgrade(app, "head")
    _sql(db_url, "INSERT INTO app_orders (id, total) VALUES (1, 30), (2, 45)")
    assert _sql(db_url, "SELECT version_num FROM alembic_version") == [(APP_REVISION,)]
    assert _sql(db_url, f"SELECT version_num FROM {VERSION_TABLE}") == [(HEAD_REVISION,)]
    assert _tables(db_url) == OUR_TABLES | {"alembic_version", "app_orders"}
    app_tables = {"alembic_version", "app_orders"}
    theirs = _dump(db_url, app_tables)

    _downgrade(db_url, FIRST_REVISION)
    assert current(db_url) == FIRST_REVISION
    assert _dump(db_url, app_tables) == theirs
    assert upgrade(db_url) == HEAD_REVISION
    assert _dump(db_url, app_tables) == theirs
    check(db_url)

    # The application's alembic sees only its own history, in either direction.
    command.upgrade(app, "head")
    assert _dump(db_url, app_tables) == theirs
    ours = _dump(db_url, OUR_TABLES)
    command.downgrade(app, "base")
    assert _sql(db_url, "SELECT version_num FROM alembic_version") == []
    assert "app_orders" not in _tables(db_url)
    assert _dump(db_url, OUR_TABLES) == ours
    check(db_url)


# A schema written by a newer gotstate-persist.


def test_schema_too_new_is_refused_and_left_untouched(
    db_url: str, keyring: gp.KeyRing, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(db_url)
    _sql(db_url, f"UPDATE {VERSION_TABLE} SET version_num = '{UNKNOWN_REVISION}'")
    before = _dump(db_url)
    refusals: list[Callable[[], object]] = [
        lambda: gp.open_store(db_url, keyring=keyring),
        lambda: gp.open_store(db_url, keyring=keyring, upgrade=True),
        lambda: check(db_url),
        lambda: upgrade(db_url),
        lambda: upgrade(db_url, FIRST_REVISION),
    ]
    for refused in refusals:
        with pytest.raises(gp.SchemaTooNew, match="upgrade gotstate-persist"):
            refused()
    assert current(db_url) == UNKNOWN_REVISION
    capsys.readouterr()
    assert cli(["db", "check", db_url]) == 1
    assert "SchemaTooNew" in capsys.readouterr().err
    assert cli(["db", "upgrade", db_url]) == 1
    assert cli(["db", "current", db_url]) == 0
    assert capsys.readouterr().out.strip() == UNKNOWN_REVISION
    assert _dump(db_url) == before


# The db commands.


def test_db_commands_through_the_api(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _sql(db_url, "CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    assert cli(["db", "current", db_url]) == 1
    assert "holds no gotstate-persist store" in capsys.readouterr().err
    assert cli(["db", "check", db_url]) == 1
    assert "holds no gotstate-persist store" in capsys.readouterr().err
    upgrade(db_url, FIRST_REVISION)
    assert cli(["db", "current", db_url]) == 0  # an outdated schema is still reported
    assert capsys.readouterr().out.strip() == FIRST_REVISION
    assert cli(["db", "check", db_url]) == 1
    assert "SchemaOutdated" in capsys.readouterr().err
    assert cli(["db", "upgrade", db_url]) == 0
    assert capsys.readouterr().out.strip() == f"schema at {HEAD_REVISION} (head {HEAD_REVISION})"
    assert cli(["db", "check", db_url]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli(["db", "current", db_url]) == 0
    assert capsys.readouterr().out.strip() == HEAD_REVISION


def test_db_read_commands_refuse_a_missing_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    for name in ("current", "check"):
        assert cli(["db", name, f"sqlite:///{missing}"]) == 2
        assert "no SQLite database" in capsys.readouterr().err
    assert not missing.exists()
