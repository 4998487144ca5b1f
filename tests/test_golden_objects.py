"""Object-store layouts, catalog names and wire ids are pinned like the SQL schema is.

tests/fixtures/golden_objects holds stores written once per layout (by
tests/fixtures/golden_objects.py, never regenerated). They must stay readable,
and the code must still write exactly the same object names today: a refactor
that renames objects would orphan every stored one with the round-trip tests
green. The structure fingerprint recipe and the envelope's algorithm and codec
ids are pinned here too.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from order_workflow import build_order_machine

import gotstate_persist as gp
from gotstate_persist.backends._layout import LAYOUT_OBJECT
from gotstate_persist.backends._objectnames import (
    catalog_object_name,
    claim_name,
    key_components,
    namespace_components,
    tombstone_name,
    version_name,
)
from gotstate_persist.cli import main as cli
from gotstate_persist.formats import machine as snapshot_formats

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import golden_objects  # noqa: E402
from golden_records import KEYRING, OrderV1, formats  # noqa: E402

LAYOUTS = sorted((FIXTURES / "golden_objects").glob("layout-*"))
_TOKEN = re.compile(r"\.[0-9a-f]{16}$")


def _tree(root: Path) -> list[str]:
    """Every file below ``root``, relative, rewrite tokens replaced by a placeholder."""
    return sorted(
        _TOKEN.sub(".<token>", p.relative_to(root).as_posix())
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith((".db", "-wal", "-shm", "keys.json"))
    )


def test_the_current_layout_has_a_golden_store() -> None:
    assert [p.name for p in LAYOUTS][-1] == f"layout-{golden_objects.LAYOUT}"


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda p: p.name)
@pytest.mark.parametrize("kind", ["plain", "catalog"])
def test_golden_object_store_stays_readable(layout: Path, kind: str, tmp_path: Path) -> None:
    shutil.copytree(layout / kind, tmp_path / kind)
    here = tmp_path / kind
    if kind == "plain":
        url, options = f"file://{here}", {}
        keys = gp.KeyRing.load(KEYRING.read_text())
        newest = OrderV1("o-1", Decimal("12.00"), [("sku-1", 4)])
    else:
        url = f"file://{here / 'objects'}"
        options = {"catalog": f"sqlite:///{here / 'catalog.db'}"}
        keys = gp.KeyRing.load((here / "keys.json").read_text())
        newest = OrderV1("o-1", Decimal("13.00"), [])
    with gp.open_store(url, namespace="orders", keyring=keys, formats=formats(), **options) as s:
        assert s.keys() == ["order-42", "order-record"]
        assert s.load("order-record") == newest
        assert s.load("order-record", version=1) == OrderV1("o-1", Decimal("10.50"), [("sku-1", 3)])
        fresh = build_order_machine()
        s.restore_machine("order-42", fresh)
        assert fresh.current_state.name == "payment"
        assert s.versions("../gone é") == []
        assert s.save("../gone é", newest).version == 2  # the tombstone's number is not reused
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys.export())
    catalog = ["--catalog", options["catalog"]] if options else []
    assert cli(["verify", url, "--keys", str(keys_file), *catalog]) == 0


@pytest.mark.parametrize("kind", ["plain", "catalog"])
def test_the_code_still_writes_the_golden_names(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generator, run today into a temporary place, writes the same object names.

    Object names carry each record's format version; the golden stores hold
    version 1 machine snapshots, so the generator writes those (newer
    snapshot formats are pinned by their own golden fixtures).
    """
    monkeypatch.setattr(golden_objects, "TARGET", tmp_path / "layout")
    monkeypatch.setattr(snapshot_formats, "SNAPSHOT_FORMATS", snapshot_formats.SNAPSHOT_FORMATS[:1])
    golden_objects.main()
    golden = FIXTURES / "golden_objects" / f"layout-{golden_objects.LAYOUT}"
    assert _tree(tmp_path / "layout" / kind) == _tree(golden / kind)
    marker = golden / kind / ("objects" if kind == "catalog" else "") / LAYOUT_OBJECT
    written = tmp_path / "layout" / kind / ("objects" if kind == "catalog" else "") / LAYOUT_OBJECT
    ours, theirs = json.loads(written.read_bytes()), json.loads(marker.read_bytes())
    assert list(ours) == list(theirs) == ["managed_by_catalog", "catalog", "catalog_id"]
    assert ours["managed_by_catalog"] is theirs["managed_by_catalog"] is (kind == "catalog")
    if kind == "plain":
        assert ours["catalog"] is theirs["catalog"] is ours["catalog_id"] is None
    else:  # the catalog's URL where each was written, and its identity (32 hex digits)
        assert ours["catalog"].endswith("/catalog.db") and theirs["catalog"].endswith("/catalog.db")
        assert (
            re.fullmatch("[0-9a-f]{32}", ours["catalog_id"])
            and ours["catalog_id"] != (theirs["catalog_id"])
        )


def test_names_are_pinned() -> None:
    assert namespace_components("orders") == ["sn5zgizlsom"]
    assert key_components("order-42") == ["kn5zgizlsfu2de"]
    assert key_components("../x/é") == ["kfyxc66bpyouq"]
    long = key_components("k" * 255)
    assert [len(c) for c in long] == [201, 201, 9] and [c[0] for c in long] == ["x", "x", "k"]
    assert version_name(7, "gotstate.machine", 1, 1767270645123456) == (
        "v0000000007~gotstate.machine~1~1767270645123456"
    )
    assert (claim_name(7), tombstone_name(12)) == ("r0000000007", "d0000000012")
    assert catalog_object_name(7, 2, None) == "o0000000000000000007.2"
    assert catalog_object_name(7, 2, 0x1F) == "o0000000000000000007.2.000000000000001f"
    assert catalog_object_name(2**63 - 1, 10, 2**63 - 1) == (
        "o9223372036854775807.10.7fffffffffffffff"
    )


def test_fingerprint_recipe_is_pinned() -> None:
    assert gp.fingerprint(build_order_machine()) == (
        "sha256:d50b4f4734e3cfa20371346dce021a3da8f79e0530523305ff0b7d74cf469a5c"
    )


def test_envelope_wire_ids_are_pinned() -> None:
    """design.md: algorithm ids 1-4 and codec ids 1-2, read from real envelopes."""
    from gotstate_persist.sealing import read_header, seal

    expected = {"aes-256-gcm": 1, "chacha20-poly1305": 2, "hmac-sha256": 3, "ed25519": 4}
    for algorithm, wire_id in expected.items():
        keys = gp.KeyRing.generate(algorithm=algorithm)
        for codec_id in (1, 2):
            blob = seal(keys, b"\x80", codec_id=codec_id, namespace="n", key="k", version=1)
            assert blob[:4] == b"GSPB" and blob[4] == 1
            assert (blob[5], blob[6]) == (wire_id, codec_id)
            assert read_header(blob).key_id == keys.primary_id
