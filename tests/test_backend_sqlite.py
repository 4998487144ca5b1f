"""The SQLite backend passes the shared conformance suite unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gotstate_persist.backends import Backend, open_backend
from gotstate_persist.testing import BackendTests


class TestSQLiteBackend(BackendTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        with open_backend(f"sqlite:///{tmp_path / 'conformance.db'}") as opened:
            yield opened
