"""Shared fixtures: real SQLite files in tmp_path, real keyrings, example machines."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _postgres import *  # noqa: F403
from _s3 import *  # noqa: F403
from hypothesis import HealthCheck, settings

import gotstate_persist as gp

# Machines here are shared and noisy, and several properties touch real files
# (fsync) or processes: time is no part of any property, so no deadlines.
settings.register_profile(
    "gotstate-persist", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("gotstate-persist")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@pytest.fixture
def keyring() -> gp.KeyRing:
    return gp.KeyRing.generate()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def store(sqlite_url: str, keyring: gp.KeyRing) -> Iterator[gp.Store]:
    with gp.open_store(sqlite_url, namespace="orders", keyring=keyring) as opened:
        yield opened


@pytest.fixture(params=["file", "s3", "s3-layout1"])
def plain_place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A plain object store: local files, or S3 on the moto server (object layout 2, or
    layout 1 as earlier releases made it)."""
    if request.param == "file":
        return f"file://{tmp_path / 'blobs'}", {}
    url, options = request.getfixturevalue("s3_url" if request.param == "s3" else "s3_layout1_url")
    return url, dict(options)
