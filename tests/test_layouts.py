"""One prefix, one history: plain and catalog-managed object stores refuse each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import gotstate_persist as gp
from gotstate_persist.backends import open_backend
from gotstate_persist.backends._layout import LAYOUT_OBJECT
from gotstate_persist.cli import main

UrlAndOptions = tuple[str, dict[str, Any]]


@pytest.fixture(params=["file", "s3"])
def fresh_place(request: pytest.FixtureRequest, tmp_path: Path) -> UrlAndOptions:
    """A prefix nothing was written to yet (which a catalog may then take)."""
    if request.param == "file":
        return f"file://{tmp_path / 'blobs'}", {}
    url, options = request.getfixturevalue("s3_url")
    return url, dict(options)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_catalog_store_refuses_to_open_without_its_catalog(
    fresh_place: UrlAndOptions, tmp_path: Path
) -> None:
    url, options = fresh_place
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    with open_backend(url, catalog=catalog, **options) as backend:
        backend.put("ns", "k", 1, b"blob", kind="x", format_version=1, created_at_us=1)
    with pytest.raises(gp.InvalidArgument) as refused:
        open_backend(url, **options)
    message = str(refused.value)
    assert "catalog" in message and "catalog.db" in message and "catalog=URL" in message
    with open_backend(url, catalog=catalog, **options) as backend:  # still fine with it
        assert backend.get("ns", "k")[1] == b"blob"


def test_a_plain_store_refuses_a_catalog(plain_place: UrlAndOptions, tmp_path: Path) -> None:
    url, options = plain_place
    catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
    with open_backend(url, **options) as backend:
        backend.put("ns", "k", 1, b"blob", kind="x", format_version=1, created_at_us=1)
    with pytest.raises(gp.InvalidArgument, match=r"written without a catalog.*copy"):
        open_backend(url, catalog=catalog, **options)
    with open_backend(url, **options) as backend:
        assert backend.get("ns", "k")[1] == b"blob"


def test_an_unmarked_store_of_the_other_layout_is_refused_at_the_first_write(
    tmp_path: Path,
) -> None:
    """Prefixes written before the marker existed: checked before they are marked."""
    root = tmp_path / "blobs"
    url, catalog = f"file://{root}", f"sqlite:///{tmp_path / 'catalog.db'}"
    with open_backend(url) as backend:
        backend.put("ns", "k", 1, b"blob", kind="x", format_version=1, created_at_us=1)
    (root / LAYOUT_OBJECT).unlink()  # as an older release left it
    before = _files(root)
    with (
        open_backend(url, catalog=catalog) as backend,
        pytest.raises(gp.InvalidArgument, match="written without a catalog"),
    ):
        backend.put("ns", "k2", 1, b"blob", kind="x", format_version=1, created_at_us=1)
    assert _files(root) == before  # nothing written


def test_the_cli_refuses_a_catalog_store_opened_without_its_catalog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, catalog = f"file://{tmp_path / 'blobs'}", f"sqlite:///{tmp_path / 'catalog.db'}"
    with open_backend(url, catalog=catalog) as backend:
        backend.put("ns", "k", 1, b"blob", kind="x", format_version=1, created_at_us=1)
    assert main(["ls", url]) == 2
    err = capsys.readouterr().err
    assert "catalog" in err and "Traceback" not in err
    assert main(["ls", url, "--catalog", catalog, "--namespace", "ns"]) == 0
    assert "k" in capsys.readouterr().out


def test_a_damaged_marker_is_an_integrity_error(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    with open_backend(f"file://{root}") as backend:
        backend.put("ns", "k", 1, b"blob", kind="x", format_version=1, created_at_us=1)
    (root / LAYOUT_OBJECT).write_bytes(b"\x00garbage")
    with pytest.raises(gp.IntegrityError, match="layout marker"):
        open_backend(f"file://{root}")


def test_a_catalog_store_refuses_another_catalog(
    fresh_place: UrlAndOptions, tmp_path: Path
) -> None:
    """A mistyped or foreign catalog would show the store empty and sweep it empty."""
    url, options = fresh_place
    right = f"sqlite:///{tmp_path / 'right.db'}"
    with open_backend(url, catalog=right, **options) as backend:
        for key in ("a", "b", "c"):
            backend.put("ns", key, 1, b"blob", kind="x", format_version=1, created_at_us=1)
    mistyped = tmp_path / "rihgt.db"
    with pytest.raises(gp.InvalidArgument, match="another catalog") as refused:
        open_backend(url, catalog=f"sqlite:///{mistyped}", **options)
    assert "right.db" in str(refused.value) and "rihgt.db" in str(refused.value)
    other_place = f"file://{tmp_path / 'elsewhere'}"
    foreign = f"sqlite:///{tmp_path / 'foreign.db'}"
    with open_backend(other_place, catalog=foreign) as elsewhere:  # a catalog in use
        elsewhere.put("ns", "z", 1, b"blob", kind="x", format_version=1, created_at_us=1)
    with pytest.raises(gp.InvalidArgument, match="another catalog"):
        open_backend(url, catalog=foreign, **options)
    with open_backend(url, catalog=right, **options) as backend:
        assert backend.keys("ns") == ["a", "b", "c"]
        assert backend.sweep("ns") == 0
        assert [backend.get("ns", key)[1] for key in ("a", "b", "c")] == [b"blob"] * 3
