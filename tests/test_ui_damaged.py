"""The inspector on damaged or missing things: one bad record never fails a whole page."""

from __future__ import annotations

from pathlib import Path

import msgspec
from _ui_store import NAMESPACE, SHOWN_URL, populate
from starlette.testclient import TestClient

import gotstate_persist as gp
from gotstate_persist._pipeline import RecordPipeline
from gotstate_persist.backends import open_backend
from gotstate_persist.config._commit import value_key
from gotstate_persist.ui import Inspector, ReadOnlyBackend, create_app

TOKEN = "d" * 43


def _client(url: str, keyring: gp.KeyRing) -> tuple[TestClient, ReadOnlyBackend]:
    backend = ReadOnlyBackend(open_backend(url, create=False))
    return TestClient(create_app(Inspector.of(backend, SHOWN_URL, keyring, None), TOKEN)), backend


def test_a_configuration_version_with_an_impossible_time_shows_as_such(tmp_path: Path) -> None:
    stored = populate(tmp_path)
    keyring = gp.KeyRing.load(stored.keys.read_text(encoding="utf-8"))
    backend = open_backend(stored.url, create=False)
    try:
        pipeline = RecordPipeline(
            backend, keyring=keyring, namespace=NAMESPACE, formats=gp.FormatRegistry()
        )
        key = value_key("payments")
        newest = max(info.version for info in backend.versions(NAMESPACE, key))
        _info, record = pipeline.load(key, newest)
        damaged = msgspec.structs.replace(record, version=newest + 1, changed_at_us=2**62)
        pipeline.put_versions([(key, newest + 1, damaged, newest)])
    finally:
        backend.close()
    client, reader = _client(stored.url, keyring)
    try:
        with client:
            for route in ("/config", "/api/config"):
                answer = client.get(route, params={"token": TOKEN})
                assert answer.status_code == 200, (route, answer.text)
                assert "(impossible timestamp)" in answer.text
    finally:
        reader.close()


def test_pages_of_a_namespace_the_store_does_not_have_are_404(tmp_path: Path) -> None:
    stored = populate(tmp_path)
    keyring = gp.KeyRing.load(stored.keys.read_text(encoding="utf-8"))
    client, reader = _client(stored.url, keyring)
    try:
        with client:
            for route in ("/extensions", "/api/extensions", "/config", "/api/config"):
                answer = client.get(route, params={"ns": "nope", "token": TOKEN})
                assert answer.status_code == 404, (route, answer.text)
    finally:
        reader.close()
