"""The public surface: exports, and full-stack round trips of user records."""

from __future__ import annotations

import inspect
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gotstate_persist as gp
from gotstate_persist import errors


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(gp) if not name.startswith("_")} - {"annotations"}
    modules = {name for name, value in vars(gp).items() if inspect.ismodule(value)}
    assert set(gp.__all__) == (public - modules) | {"__version__"}
    for name in gp.__all__:
        assert hasattr(gp, name), name


def test_error_tree() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), gp.PersistError)
    assert issubclass(gp.SchemaOutdated, gp.SchemaError)
    assert issubclass(gp.SchemaTooNew, gp.SchemaError)
    assert issubclass(gp.RateLimited, gp.QuotaExceeded)
    assert issubclass(gp.InvalidArgument, ValueError)
    assert "PersistError" in (errors.__doc__ or "")


class Item(msgspec.Struct, frozen=True):
    sku: str
    qty: int


class Record(msgspec.Struct, frozen=True):
    name: str
    count: int
    ratio: float
    blob: bytes
    tags: list[str]
    items: list[Item]
    extra: dict[str, int]
    note: str | None = None


FORMATS = gp.FormatRegistry()
FORMATS.register(Record, kind="record", version=1)

RECORDS = st.builds(
    Record,
    name=st.text(),
    count=st.integers(-(2**63), 2**63 - 1),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
    blob=st.binary(max_size=64),
    tags=st.lists(st.text(max_size=8), max_size=5),
    items=st.lists(st.builds(Item, st.text(max_size=5), st.integers(0, 10**6)), max_size=4),
    extra=st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=4),
    note=st.none() | st.text(max_size=20),
)
KEYS = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=60
).filter(lambda k: len(k.encode()) <= 255 and not any(0x7F <= ord(c) <= 0x9F for c in k))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'state.db'}"
    opened = [
        gp.open_store(
            url,
            namespace=f"{codec}-{algorithm}",
            keyring=gp.KeyRing.generate(algorithm),
            formats=FORMATS,
            codec=codec,
        )
        for codec in ("msgpack", "json")
        for algorithm in ("aes-256-gcm", "chacha20-poly1305", "hmac-sha256", "ed25519")
    ]
    yield opened
    for store in opened:
        store.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=RECORDS, key=KEYS, which=st.integers(0, 7))
def test_records_round_trip_through_every_codec_and_algorithm(
    stores: list[gp.Store], record: Record, key: str, which: int
) -> None:
    store = stores[which]
    ref = store.save(key, record)
    assert store.load(key) == record
    assert store.load(key, version=ref.version) == record
    assert store.versions(key)[-1] == ref
    assert key in store.keys()


def test_readme_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first code block, executed as written (in a scratch directory)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "state.db").exists()


def test_readme_record_format_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quick start, "Your own records" and "Changing a record format", in one session."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()

    def first_block(after: str) -> str:
        return readme.split(after, 1)[1].split("```python", 1)[1].split("```", 1)[0]

    code = "\n".join(
        first_block(heading)
        for heading in ("## Quick start", "### Your own records", "### Changing a record format")
    )
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
