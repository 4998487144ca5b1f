"""Data written by released versions must stay readable forever.

The fixtures under tests/fixtures/golden_db were written once by
``tests/fixtures/golden_records.py`` at each released schema revision and
record format, and are never regenerated.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from gotstate.core.events import Event
from order_workflow import build_order_machine, get_data

import gotstate_persist as gp
from gotstate_persist.cli import main as cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from golden_records import GOLDEN_QUOTA, OrderV1, formats  # noqa: E402

KEYS = gp.KeyRing.load((FIXTURES / "golden_envelopes" / "aes-256-gcm.keys.json").read_text())
DATABASES = sorted((FIXTURES / "golden_db").glob("*.sqlite"))


def test_there_is_a_golden_database_for_the_current_revision() -> None:
    from gotstate_persist.migrations import REVISIONS

    assert {p.stem for p in DATABASES} == set(REVISIONS)


@pytest.fixture(params=DATABASES, ids=[p.stem for p in DATABASES])
def golden_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A copy of one golden database, upgraded to the newest schema as a user would."""
    from gotstate_persist.migrations import HEAD_REVISION

    copy = tmp_path / "golden.sqlite"
    shutil.copy(request.param, copy)
    url = f"sqlite:///{copy}"
    if request.param.stem != HEAD_REVISION:
        before = copy.read_bytes()
        with pytest.raises(gp.SchemaOutdated, match="gotstate-persist db upgrade"):
            gp.open_store(url, keyring=KEYS)
        assert copy.read_bytes() == before  # refused untouched
        assert cli(["db", "upgrade", url]) == 0
    return url


def test_upgraded_golden_database_counts_its_usage(golden_url: str) -> None:
    for namespace in ("msgpack", "json"):
        with gp.open_store(golden_url, namespace=namespace, keyring=KEYS) as store:
            kept = store.usage()
            recounted = store.usage(recount=True)
            assert recounted.drift is None
            assert (kept.records, kept.keys) == (2, 2)
            assert kept == recounted


@pytest.mark.parametrize("namespace", ["msgpack", "json"])
def test_golden_machine_snapshot_restores(golden_url: str, namespace: str) -> None:
    entered: list[str] = []
    fresh = build_order_machine(entered)
    with gp.open_store(golden_url, namespace=namespace, keyring=KEYS, formats=formats()) as s:
        ref = s.restore_machine("order-42", fresh)
        assert (ref.version, ref.kind, ref.format_version) == (1, "gotstate.machine", 1)
        assert ref.created_at == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        record = s.load("order-record")
    assert entered == []
    assert fresh.current_state.name == "payment"
    cart = get_data(fresh, "cart")
    assert cart == {"items": (("sku-1", 2), ("sku-7", 1)), "tags": frozenset({"gift", "express"})}
    assert type(cart["items"]) is tuple and type(cart["tags"]) is frozenset
    payment = get_data(fresh, "payment")
    assert payment == {
        "total": Decimal("59.90"),
        "due": datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
        "token": b"\x00\x01\xfe\xff",
        "ref": UUID("12345678-1234-5678-1234-567812345678"),
    }
    assert str(payment["total"]) == "59.90"
    assert record == OrderV1("o-1", Decimal("10.50"), [("sku-1", 3)])
    assert fresh.process_event(Event("pay"))
    assert fresh.current_state.name == "picking"


def test_golden_database_verifies(golden_url: str, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(KEYS.export())
    assert cli(["verify", golden_url, "--keys", str(keys_file)]) == 0


@pytest.mark.parametrize(
    "database", [p for p in DATABASES if p.stem != "v0.1.0.a"], ids=lambda p: p.stem
)
def test_golden_quota_survives(database: Path, tmp_path: Path) -> None:
    """Quotas exist from v0.2.0.a on; a stored one is enforced after any upgrade."""
    copy = tmp_path / "golden.sqlite"
    shutil.copy(database, copy)
    url = f"sqlite:///{copy}"
    from gotstate_persist.migrations import HEAD_REVISION

    if database.stem != HEAD_REVISION:
        assert cli(["db", "upgrade", url]) == 0
    with gp.open_store(url, namespace="msgpack", keyring=KEYS, formats=formats()) as store:
        assert store.quota == GOLDEN_QUOTA
        for _ in range(5):
            store.save("order-record", OrderV1("o-2", Decimal("1.00"), []))
        assert [ref.version for ref in store.versions("order-record")] == [2, 3, 4, 5, 6]
    with gp.open_store(url, namespace="json", keyring=KEYS) as store:
        assert store.quota is None
