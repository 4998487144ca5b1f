"""Data-format migrations as steps of an application's own alembic history.

An application that keeps its gotstate-persist store in its own database can
order "add a column" and "rewrite every order record as version 2" in one
alembic history::

    # myapp/migrations/versions/0042_orders_v2.py
    from gotstate_persist.migrations.ops import migrate_format

    def upgrade():
        report = migrate_format(
            "order", formats=myapp.records.formats(), keyring=KeyRing.from_env()
        )
        assert not report.failed, report.failed
        op.add_column("app_orders", sa.Column("currency", sa.String(3)))

``migrate_format`` runs :meth:`gotstate_persist.Store.migrate` on the database
alembic is migrating (the URL of ``op.get_bind()``), through its own
connections: each batch commits as it goes, so the data migration does not
depend on the revision's transaction. That is safe because ``migrate`` is
idempotent and resumable: if the revision fails afterwards, running the
upgrade again finds the records already migrated. SQLite allows one writer at
a time, so call it before the revision's own schema changes there (those take
the write lock until the revision commits).
"""

from __future__ import annotations

from .._migrate import DEFAULT_BATCH_SIZE, MigrationReport, Progress
from .._names import DEFAULT_NAMESPACE
from ..errors import InvalidArgument
from ..formats import FormatRegistry
from ..sealing import KeyRing

__all__ = ["migrate_format"]


def migrate_format(
    kind: str,
    *,
    formats: FormatRegistry,
    keyring: KeyRing,
    namespace: str = DEFAULT_NAMESPACE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> MigrationReport:
    """Migrate ``kind`` records of the database this alembic revision runs on (see module)."""
    from alembic import op

    from ..store import open_store

    try:
        bind = op.get_bind()
    except (AttributeError, NameError) as exc:  # alembic's proxy outside a migration
        raise InvalidArgument(
            "migrate_format runs inside an alembic revision's upgrade() or downgrade()"
        ) from exc
    url = bind.engine.url.render_as_string(hide_password=False)
    with open_store(url, namespace=namespace, keyring=keyring, formats=formats) as store:
        return store.migrate(kind, batch_size=batch_size, progress=progress)
