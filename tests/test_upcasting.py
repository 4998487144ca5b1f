"""Record format versions: upcasting chains, read lazily, never written back."""

from __future__ import annotations

import sqlite3
import traceback
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gotstate_persist as gp


class OrderV1(msgspec.Struct, frozen=True):
    id: str
    total: Decimal
    when: datetime
    lines: list[tuple[str, int]]


class OrderV2(msgspec.Struct, frozen=True):
    id: str
    total: Decimal
    when: datetime
    lines: list[tuple[str, int]]
    currency: str


class OrderV3(msgspec.Struct, frozen=True):
    id: str
    amount_cents: int
    when: datetime
    items: dict[str, int]
    currency: str


def to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


def to_v3(data: dict[str, Any]) -> dict[str, Any]:
    items: dict[str, int] = {}
    for sku, count in data["lines"]:
        items[sku] = items.get(sku, 0) + count
    return {
        "id": data["id"],
        "amount_cents": int(Decimal(data["total"]) * 100),
        "when": data["when"],
        "items": items,
        "currency": data["currency"],
    }


def registry(*, newest: int, with_v1: bool = True) -> gp.FormatRegistry:
    formats = gp.FormatRegistry()
    if with_v1:
        formats.register(OrderV1, kind="order")
    if newest >= 2:
        formats.register(OrderV2, kind="order", version=2, upcast=to_v2)
    if newest >= 3:
        formats.register(OrderV3, kind="order", version=3, upcast=to_v3)
    return formats


KEYS = gp.KeyRing.generate()
WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
V1 = OrderV1("o-1", Decimal("12.34"), WHEN, [("a", 1), ("b", 2), ("a", 3)])


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'orders.db'}"


def _save_v1(url: str, record: OrderV1 = V1, key: str = "o") -> None:
    with gp.open_store(url, keyring=KEYS, formats=registry(newest=1)) as store:
        store.save(key, record)


def _rows(url: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT * FROM gotstate_persist_records ORDER BY 1, 2, 3").fetchall()


def test_a_chain_reads_old_records_as_the_newest_version(url: str) -> None:
    _save_v1(url)
    before = _rows(url)
    with gp.open_store(url, keyring=KEYS, formats=registry(newest=3)) as store:
        assert store.load("o") == OrderV3("o-1", 1234, WHEN, {"a": 4, "b": 2}, "EUR")
        (ref,) = store.versions("o")
        assert (ref.kind, ref.format_version) == ("order", 1)  # the stored one, unchanged
    assert _rows(url) == before  # reads never write


def test_the_old_struct_need_not_be_registered(url: str) -> None:
    _save_v1(url)
    with gp.open_store(url, keyring=KEYS, formats=registry(newest=2, with_v1=False)) as store:
        assert store.load("o") == OrderV2("o-1", Decimal("12.34"), WHEN, V1.lines, "EUR")


def test_records_of_the_newest_version_are_read_directly(url: str) -> None:
    record = OrderV2("o-2", Decimal("1"), WHEN, [], "USD")
    with gp.open_store(url, keyring=KEYS, formats=registry(newest=2)) as store:
        store.save("o", record)
        assert store.load("o") == record
        assert store.versions("o")[0].format_version == 2


def test_a_record_newer_than_the_code_is_refused_and_kept(url: str) -> None:
    with gp.open_store(url, keyring=KEYS, formats=registry(newest=3)) as store:
        store.save("o", OrderV3("o", 1, WHEN, {}, "EUR"))
    before = _rows(url)
    with (
        gp.open_store(url, keyring=KEYS, formats=registry(newest=2)) as store,
        pytest.raises(gp.FormatError, match="newer than this code knows"),
    ):
        store.load("o")
    assert _rows(url) == before


def test_an_upcaster_that_fails_is_a_format_error(url: str) -> None:
    _save_v1(url)

    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("nope")

    formats = gp.FormatRegistry()
    formats.register(OrderV2, kind="order", version=2, upcast=broken)
    with (
        gp.open_store(url, keyring=KEYS, formats=formats) as store,
        pytest.raises(gp.FormatError, match="from version 1 to 2 failed") as caught,
    ):
        store.load("o")
    # the type and the place are named; the message (it may quote the decrypted
    # record) is neither repeated nor chained (tests/test_canaries.py)
    assert "KeyError at test_upcasting.py:" in str(caught.value)
    assert "in broken" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "nope" not in "".join(traceback.format_exception(caught.value))


def test_an_upcaster_whose_output_the_schema_refuses_is_a_format_error(url: str) -> None:
    _save_v1(url)
    formats = gp.FormatRegistry()
    formats.register(OrderV2, kind="order", version=2, upcast=lambda d: {**d, "currency": 7})
    with (
        gp.open_store(url, keyring=KEYS, formats=formats) as store,
        pytest.raises(gp.FormatError, match=r"schema refuses \(at `\$\.currency`\)") as caught,
    ):
        store.load("o")
    assert "12.34" not in str(caught.value)  # never the data


def test_a_gap_in_the_chain_is_a_format_error_naming_the_missing_step(url: str) -> None:
    """load returns the newest format or nothing: never the old Struct because a step
    is missing, and it says the same as migrate, which leaves the record alone."""
    _save_v1(url)
    before = _rows(url)
    formats = registry(newest=1)
    formats.register(OrderV3, kind="order", version=3, upcast=to_v3)  # no 1 -> 2
    missing = "no upcaster turns version 1 into version 2"
    with gp.open_store(url, keyring=KEYS, formats=formats) as store:
        with pytest.raises(gp.FormatError, match=f"{missing}.*version=2, upcast=fn") as caught:
            store.load("o")
        assert "not changed" in str(caught.value)
        report = store.migrate("order")
        assert (report.migrated, [(f.key, f.version) for f in report.failed]) == (0, [("o", 1)])
        assert missing in report.failed[0].reason
    assert _rows(url) == before


def test_registering_upcasters_is_checked() -> None:
    formats = gp.FormatRegistry()
    with pytest.raises(gp.InvalidArgument, match="no previous version"):
        formats.register(OrderV1, kind="order", version=1, upcast=to_v2)
    with pytest.raises(gp.InvalidArgument, match="function"):
        formats.register(OrderV2, kind="order", version=2, upcast="to_v2")  # type: ignore[arg-type]


orders_v1 = st.builds(
    OrderV1,
    id=st.text(min_size=1, max_size=20),
    total=st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False),
    when=st.datetimes(timezones=st.just(UTC)),
    lines=st.lists(st.tuples(st.text(min_size=1, max_size=5), st.integers(0, 1000)), max_size=6),
)


@given(orders_v1)
def test_the_upcast_chain_is_total_for_version_1_data(record: OrderV1) -> None:
    """Any valid version-1 record reaches version 3, as the chain computes it by hand."""
    formats = registry(newest=3)
    payload = msgspec.msgpack.encode(record)

    def decode(record_type: Any) -> Any:
        return msgspec.msgpack.decode(payload, type=record_type)

    upcast = formats.decode_newest("order", 1, decode)
    assert isinstance(upcast, OrderV3)
    expected = to_v3(to_v2(msgspec.to_builtins(record)))
    assert msgspec.to_builtins(upcast) == expected


class Step(msgspec.Struct, frozen=True):
    """Every format version of the generated kind has this shape; ``v`` counts the
    upcasts, so a record read as version N must say N whatever it was stored as."""

    v: int


def _step_types() -> dict[int, type[Step]]:
    # distinct classes: a Struct is registered under exactly one (kind, version)
    return {n: type(f"StepV{n}", (Step,), {}) for n in range(1, 7)}


def _bump(data: dict[str, Any]) -> dict[str, Any]:
    return {"v": data["v"] + 1}


@given(
    registered=st.sets(st.integers(1, 6), min_size=1),
    with_upcaster=st.sets(st.integers(2, 6)),
    data=st.data(),
)
def test_a_read_is_the_newest_version_or_a_format_error_naming_the_missing_step(
    registered: set[int], with_upcaster: set[int], data: st.DataObject
) -> None:
    """Whatever versions and upcasters are registered, a record stored as any version up
    to the newest reads as the newest, correctly upcast, or is a FormatError that names
    the one step with no upcaster; and migrate (upcastable) agrees with the read."""
    types = _step_types()
    formats = gp.FormatRegistry()
    for n in sorted(registered):
        formats.register(
            types[n], kind="step", version=n, upcast=_bump if n in with_upcaster else None
        )
    newest = max(registered)
    stored = data.draw(st.integers(1, newest), label="stored version")
    payload = msgspec.msgpack.encode({"v": stored})

    def decode(record_type: Any) -> Any:
        return msgspec.msgpack.decode(payload, type=record_type)

    upcasts = {n for n in registered if n in with_upcaster}
    chain_complete = all(n in upcasts for n in range(stored + 1, newest + 1))
    assert formats.upcastable("step", stored) == chain_complete
    if chain_complete:
        record = formats.decode_newest("step", stored, decode)
        assert type(record) is types[newest]
        assert record == types[newest](newest)
        assert formats.upcast_gap("step", stored) is None
        return
    with pytest.raises(gp.FormatError) as caught:
        formats.decode_newest("step", stored, decode)
    step = max(n for n in range(stored + 1, newest + 1) if n not in upcasts)
    assert f"no upcaster turns version {step - 1} into version {step}" in str(caught.value)
    gap = formats.upcast_gap("step", stored)  # what migrate reports
    assert gap is not None and str(caught.value).startswith(gap)
