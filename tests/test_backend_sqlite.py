"""The SQLite backend passes the shared conformance suite unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gotstate_persist.backends import Backend, open_backend
from gotstate_persist.testing import BackendTests


class TestSQLiteBackend(BackendTests):
    @pytest.fixture
    def backend_url(self, tmp_path: Path) -> tuple[str, dict[str, Any]]:
        return f"sqlite:///{tmp_path / 'conformance.db'}", {}

    @pytest.fixture
    def backend(self, backend_url: tuple[str, dict[str, Any]]) -> Iterator[Backend]:
        url, options = backend_url
        with open_backend(url, **options) as opened:
            yield opened
