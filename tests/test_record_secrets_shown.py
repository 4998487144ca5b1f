"""Every stored record, the library's own included, shown without the secrets it holds.

A configuration value stores its payload as msgpack bytes in which each secret
is an extension value. ``show`` and the inspector display any record asked for
by its key, system keys included; a payload shown as ``$bytes`` would hand the
secret to anyone who decodes base64. So every version of every key of a store
holding secret configuration (and extension settings) is shown here through
both, and no output may hold a canary: not as text, and not inside any
``$bytes`` value once decoded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from _ui_store import CONFIG_CANARY, SHOWN_URL, UiStore, populate
from starlette.testclient import TestClient

import gotstate_persist as gp
from gotstate_persist.backends import open_backend
from gotstate_persist.cli import main
from gotstate_persist.ui import Inspector, ReadOnlyBackend, create_app

TOKEN = "t" * 43


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> UiStore:
    return populate(tmp_path_factory.mktemp("secrets-shown"), extension=True)


def _every_record(stored: UiStore) -> list[tuple[str, str, int]]:
    """(namespace, key, version) of everything stored, system keys included."""
    backend = open_backend(stored.url, create=False)
    try:
        return [
            (namespace, key, info.version)
            for namespace in backend.namespaces()
            for key in backend.keys(namespace)
            for info in backend.versions(namespace, key)
        ]
    finally:
        backend.close()


def _bytes_values(value: Any) -> Iterator[bytes]:
    """Every ``$bytes`` value in a typed JSON document, decoded."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            yield base64.b64decode(value["$bytes"])
        for item in value.values():
            yield from _bytes_values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _bytes_values(item)


def _assert_no_canary(document: Any, where: object) -> None:
    text = json.dumps(document)
    assert CONFIG_CANARY not in text, where
    for raw in _bytes_values(document):
        assert CONFIG_CANARY.encode() not in raw, where


def test_config_records_are_among_those_shown(stored: UiStore) -> None:
    keys = {key for _ns, key, _v in _every_record(stored)}
    assert any(key.startswith("\x1fgotstate/config/") for key in keys), keys


def test_show_json_of_every_record_holds_no_secret(
    stored: UiStore, capsys: pytest.CaptureFixture[str]
) -> None:
    shown_payloads = 0
    for namespace, key, version in _every_record(stored):
        command = ["show", stored.url, key, "--namespace", namespace, "--keys", str(stored.keys)]
        assert main([*command, "--version", str(version), "--json"]) == 0, (key, version)
        document = json.loads(capsys.readouterr().out)
        _assert_no_canary(document, (key, version))
        payload = (
            document["record"].get("payload") if isinstance(document["record"], dict) else None
        )
        if isinstance(payload, dict) and "api_token" in payload:
            assert payload["api_token"] == {"$secret": "**********"}
            shown_payloads += 1
    assert shown_payloads >= 2  # both versions of the secret configuration, decoded


def test_inspector_record_of_every_record_holds_no_secret(stored: UiStore) -> None:
    keyring = gp.KeyRing.load(stored.keys.read_text(encoding="utf-8"))
    backend = ReadOnlyBackend(open_backend(stored.url, create=False))
    try:
        inspector = Inspector.of(backend, SHOWN_URL, keyring, None)
        with TestClient(create_app(inspector, TOKEN)) as client:
            for namespace, key, version in _every_record(stored):
                params = {"ns": namespace, "key": key, "v": str(version), "token": TOKEN}
                for route in ("/record", "/api/record"):
                    answer = client.get(route, params=params)
                    assert answer.status_code == 200, (route, key, answer.text)
                    assert CONFIG_CANARY not in answer.text, (route, key)
                    if route == "/api/record":
                        _assert_no_canary(answer.json(), (key, version))
    finally:
        backend.close()


def test_an_undecodable_payload_shows_as_such_never_as_bytes() -> None:
    from gotstate_persist._typedjson import record_fields
    from gotstate_persist.formats.config import ConfigValue

    damaged = ConfigValue("payments", 1, 1, b"\xc1" + CONFIG_CANARY.encode(), 1, 0)
    shown = record_fields(damaged)
    assert set(shown["payload"]) == {"$undecodable"}
    _assert_no_canary(shown, "damaged payload")
