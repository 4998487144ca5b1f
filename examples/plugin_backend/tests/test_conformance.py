"""The dbm backend passes gotstate-persist's conformance suite unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gotstate_persist_dbm import DbmBackend

from gotstate_persist.backends import Backend
from gotstate_persist.testing import BackendTests


class TestDbmBackend(BackendTests):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        with DbmBackend(f"dbm://{tmp_path / 'conformance'}") as opened:
            yield opened
