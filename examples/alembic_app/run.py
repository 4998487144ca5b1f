"""Order a schema change and a data-format change in one alembic history.

    python examples/alembic_app/run.py sqlite:///app.db

saves version-1 order records, then runs the application's ``alembic upgrade
head``: revision app_0002 migrates the stored records to version 2 (through
``gotstate_persist.migrations.ops.migrate_format``) and adds a column to the
application's own table. gotstate-persist's tables keep their own alembic
history (``gotstate_persist_alembic_version``) beside the application's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from records import OrderV1, OrderV2, formats  # noqa: E402

import gotstate_persist as gp  # noqa: E402


def alembic_config(url: str) -> object:
    from alembic.config import Config

    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def main(url: str) -> list[tuple[int, int]]:
    from alembic import command

    keys = gp.KeyRing.generate()
    os.environ["GOTSTATE_PERSIST_KEYS"] = keys.export()  # what the revision reads
    command.upgrade(alembic_config(url), "app_0001")
    v1 = gp.FormatRegistry()
    v1.register(OrderV1, kind="order", version=1)
    with gp.open_store(url, keyring=keys, formats=v1) as store:
        for number in range(3):
            store.save(f"order-{number}", OrderV1(f"order-{number}", 100 * number))
    command.upgrade(alembic_config(url), "head")
    with gp.open_store(url, keyring=keys, formats=formats()) as store:
        assert store.load("order-2") == OrderV2("order-2", 200, "EUR")
        stored = [(ref.version, ref.format_version) for ref in store.versions("order-2")]
    print(f"order-2 stored as (version, format): {stored}")
    return stored


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///app.db")
