"""``gotstate-persist ui`` at the server level: every route, paging, the token, read-only.

Each test drives the real application (Starlette's TestClient, in process)
over a real SQLite store populated through the library (``_ui_store``);
the browser tests (``test_ui_browser.py``) drive the real server process.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import socket
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _ui_store import (
    BULK,
    BULK_KEYS,
    CONFIG_CANARY,
    FLOW_KEY,
    FLOWS,
    HOSTILE_KEY,
    INVOICE_KEY,
    KEY,
    NAMESPACE,
    SHOWN_URL,
    URL_CANARY,
    UiStore,
    formats,
    populate,
)
from starlette.testclient import TestClient

import gotstate_persist as gp
from gotstate_persist.backends import open_backend
from gotstate_persist.cli import main
from gotstate_persist.errors import BackendError
from gotstate_persist.ui import Inspector, ReadOnlyBackend, create_app
from gotstate_persist.ui._access import cookie_name

TOKEN = "test-token-0123456789"
CANARIES = (CONFIG_CANARY, URL_CANARY)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> UiStore:
    return populate(tmp_path_factory.mktemp("ui"), extension=True)


@contextlib.contextmanager
def _client(
    stored: UiStore, *, keyring: bool, registry: gp.FormatRegistry | None = None
) -> Iterator[TestClient]:
    ring = gp.KeyRing.load(stored.keys.read_text(encoding="utf-8")) if keyring else None
    backend = ReadOnlyBackend(open_backend(stored.url, create=False))
    inspector = Inspector.of(backend, SHOWN_URL, ring, registry)
    try:
        with TestClient(create_app(inspector, TOKEN)) as client:
            yield client
    finally:
        backend.close()


@pytest.fixture
def client(stored: UiStore) -> Iterator[TestClient]:
    with _client(stored, keyring=True) as opened:
        yield opened


@pytest.fixture
def metadata_client(stored: UiStore) -> Iterator[TestClient]:
    with _client(stored, keyring=False) as opened:
        yield opened


def _get(client: TestClient, path: str, **params: Any) -> Any:
    answer = client.get(path, params={**params, "token": TOKEN})
    assert answer.status_code == 200, answer.text
    return answer


#: Every page, with the parameters it needs (the key with a journal, versions 1 and 2).
PAGES: list[tuple[str, dict[str, Any]]] = [
    ("/", {}),
    ("/keys", {"ns": NAMESPACE}),
    ("/keys", {"ns": BULK, "page": 2}),
    ("/key", {"ns": NAMESPACE, "key": KEY}),
    ("/key", {"ns": NAMESPACE, "key": HOSTILE_KEY}),
    ("/record", {"ns": NAMESPACE, "key": KEY, "v": 1}),
    ("/record", {"ns": NAMESPACE, "key": KEY, "v": 2}),
    ("/record", {"ns": NAMESPACE, "key": HOSTILE_KEY, "v": 1}),
    ("/diff", {"ns": NAMESPACE, "key": KEY, "a": 1, "b": 2}),
    ("/verify", {"ns": NAMESPACE}),
    ("/extensions", {}),
    ("/config", {}),
]


def _api(path: str) -> str:
    return "/api/namespaces" if path == "/" else "/api" + path


@pytest.mark.parametrize("keyring", [True, False], ids=["keyring", "metadata-only"])
def test_every_page_renders_without_canaries(stored: UiStore, keyring: bool) -> None:
    with _client(stored, keyring=keyring) as client:
        for path, params in PAGES:
            for route in (path, _api(path)):
                answer = _get(client, route, **params)
                for canary in CANARIES:
                    assert canary not in answer.text, (route, canary)
                if route == path:  # HTML: names are text, never markup
                    assert "<b>bold</b>" not in answer.text
                assert answer.headers["x-content-type-options"] == "nosniff"
                assert answer.headers["referrer-policy"] == "no-referrer"
                assert "default-src 'none'" in answer.headers["content-security-policy"]


def test_namespaces_with_usage_and_a_masked_url(client: TestClient) -> None:
    found = _get(client, "/api/namespaces").json()
    assert found["shape_version"] == 1
    names = {ns["name"]: ns for ns in found["namespaces"]}
    assert set(names) == {NAMESPACE, BULK, FLOWS}
    assert names[BULK]["keys"] == len(BULK_KEYS)
    page = _get(client, "/").text
    assert "postgresql://inspector:***@db.example/state" in page


def test_keys_are_paged_and_searched(client: TestClient) -> None:
    first = _get(client, "/api/keys", ns=BULK).json()
    assert (first["total"], first["pages"], first["page"]) == (120, 3, 1)
    assert [row["key"] for row in first["keys"]] == BULK_KEYS[:50]
    last = _get(client, "/api/keys", ns=BULK, page=3).json()
    assert [row["key"] for row in last["keys"]] == BULK_KEYS[100:]
    beyond = _get(client, "/api/keys", ns=BULK, page=99).json()
    assert beyond["page"] == 3
    row = first["keys"][0]
    assert (row["versions"], row["newest"], row["kind"]) == (1, 1, "gotstate.machine")
    assert row["bytes"] > 0
    prefix = _get(client, "/api/keys", ns=BULK, q="bulk-11").json()
    assert [row["key"] for row in prefix["keys"]] == BULK_KEYS[110:120]
    inside = _get(client, "/api/keys", ns=BULK, q="-05").json()
    assert [row["key"] for row in inside["keys"]] == BULK_KEYS[50:60]
    html = _get(client, "/keys", ns=BULK, q="bulk-11").text
    assert html.count('class="key-link"') == 10
    journaled = _get(client, "/api/keys", ns=NAMESPACE, q=KEY).json()["keys"][0]
    assert journaled["journal_entries"] == 3


def test_timeline_has_snapshots_and_journal_events(client: TestClient) -> None:
    found = _get(client, "/api/key", ns=NAMESPACE, key=KEY).json()
    entries = [item for item in found["timeline"] if item["type"] == "entry"]
    assert [(e["event"], e["source"], e["target"], e["actor"]) for e in entries] == [
        ("start", "idle", "cart", "api"),
        ("checkout", "cart", "payment", "web"),
        ("pay", "payment", "picking", "api"),
    ]
    snapshots = [item for item in found["timeline"] if item["type"] == "snapshot"]
    assert [s["number"] for s in snapshots] == [1, 2]
    assert all(re.fullmatch(r"0x[0-9a-f]{8}", s["key_id"]) for s in found["timeline"])
    assert found["newest"]["machine"]["current_state"] == "picking"


def test_metadata_only_without_a_keyring(metadata_client: TestClient) -> None:
    found = _get(metadata_client, "/api/key", ns=NAMESPACE, key=KEY).json()
    assert found["newest"] is None and "metadata only" in found["note"]
    assert {item["type"] for item in found["timeline"]} == {"snapshot", "entry"}
    assert all("event" not in item for item in found["timeline"])
    record = _get(metadata_client, "/api/record", ns=NAMESPACE, key=KEY, v=1).json()
    assert "machine" not in record and "metadata only" in record["note"]


def test_content_is_typed_json(client: TestClient) -> None:
    record = _get(client, "/api/record", ns=NAMESPACE, key=KEY, v=2).json()
    data = record["machine"]["state_data"]["cart"]
    assert data["total"] == {"$decimal": "24.50"}
    assert data["items"] == {"$tuple": [{"$tuple": ["sku-1", 2]}]}
    # the application's Struct is unknown here: it alone is shown as undecodable
    assert data["coupon"]["$undecodable"]["kind"] == "shop.coupon"
    assert re.fullmatch(r"aes-256-gcm key 0x[0-9a-f]{8}", record["sealed_with"])
    invoice = _get(client, "/api/record", ns=NAMESPACE, key=INVOICE_KEY, v=1).json()
    assert "not registered" in invoice["note"]
    assert invoice["record"] == {"number": 7, "total": "24.50"}  # as stored, untyped


def test_application_formats_decode_their_kinds(stored: UiStore) -> None:
    with _client(stored, keyring=True, registry=formats()) as client:
        record = _get(client, "/api/record", ns=NAMESPACE, key=KEY, v=2).json()
        coupon = record["machine"]["state_data"]["cart"]["coupon"]
        assert coupon == {
            "$struct": {
                "kind": "shop.coupon",
                "version": 1,
                "fields": {"code": "SPRING", "percent": 10},
            }
        }
        invoice = _get(client, "/api/record", ns=NAMESPACE, key=INVOICE_KEY, v=1).json()
        assert invoice["note"] is None
        assert invoice["record"]["$struct"]["fields"] == {
            "number": 7,
            "total": {"$decimal": "24.50"},
        }
        html = _get(client, "/record", ns=NAMESPACE, key=INVOICE_KEY, v=1).text
        assert "&#34;$decimal&#34;: &#34;24.50&#34;" in html


def test_the_timeline_shows_the_newest_items(stored: UiStore) -> None:
    backend = ReadOnlyBackend(open_backend(stored.url, create=False))
    with backend:
        inspector = Inspector.of(backend, stored.url)
        every, older = inspector.timeline(NAMESPACE, KEY)
        assert older == 0 and len(every) == 5
        newest, older = inspector.timeline(NAMESPACE, KEY, limit=2)
        assert (newest, older) == (every[-2:], 3)


def test_diagram_marks_active_path_and_history(client: TestClient) -> None:
    html = _get(client, "/record", ns=NAMESPACE, key=KEY, v=2).text
    found = re.findall(r'<div class="([^"]+)" data-state="([^"]+)"', html)
    by_state = {state: cls.split() for cls, state in found}
    assert "active" in by_state["picking"]
    assert "on-path" in by_state["fulfilment"]
    assert "composite" in by_state["checkout"]
    assert "history" in by_state["payment"]
    assert "initial" in by_state["idle"]
    assert "active" not in by_state["payment"]


def test_submachines_are_drawn_too(client: TestClient) -> None:
    found = _get(client, "/api/key", ns=FLOWS, key=FLOW_KEY).json()["newest"]
    top, sub = found["diagrams"]
    # the submachine's states are merged into the machine's tree, under ``review``
    assert (top["path"], top["current"], sub["path"], sub["current"]) == (
        "",
        "draft",
        "review",
        "draft",
    )
    (root,) = top["states"]
    assert root["name"] == "root" and "on-path" in root["classes"].split()
    review = next(state for state in root["children"] if state["name"] == "review")
    assert "on-path" in review["classes"].split()
    merged = next(state for state in review["children"] if state["name"] == "draft")
    assert "active" in merged["classes"].split()
    draft = next(state for state in sub["states"] if state["name"] == "draft")
    assert "active" in draft["classes"].split() and "initial" in draft["classes"].split()
    assert {"source": "draft", "target": "approved", "priority": 0} in sub["transitions"]
    html = _get(client, "/key", ns=FLOWS, key=FLOW_KEY).text
    assert html.count('class="diagram"') == 2


def test_diff_between_versions(stored: UiStore) -> None:
    with _client(stored, keyring=True, registry=formats()) as client:
        found = _get(client, "/api/diff", ns=NAMESPACE, key=KEY, a=1, b=2).json()
        html = _get(client, "/diff", ns=NAMESPACE, key=KEY, a=1, b=2).text
    paths = {change["path"]: change for change in found["changes"]}
    assert paths["current_state"]["new"] == "picking"
    assert paths["state_data.cart.total"]["change"] == "changed"
    assert "state_data.cart.coupon" not in paths  # unchanged
    assert html.count('<tr class="changed">') == len(
        [c for c in found["changes"] if c["change"] == "changed"]
    )


def test_verify_extensions_and_config(client: TestClient) -> None:
    verified = _get(client, "/api/verify", ns=NAMESPACE).json()
    assert {r["key"]: r["problems"] for r in verified["results"]} == {
        HOSTILE_KEY: [],
        INVOICE_KEY: [],
        KEY: [],
    }
    exts = _get(client, "/api/extensions", ns=NAMESPACE).json()["namespaces"][0]["items"]
    assert [(ext["name"], ext["status"], ext["revision"]) for ext in exts] == [
        ("throttle", "inactive", 3)
    ]
    assert [old["status"] for old in exts[0]["history"]] == ["registered", "active", "inactive"]
    assert exts[0]["stats"]["calls"] == 1 and exts[0]["stats"]["ok"] == 1
    configs = _get(client, "/api/config", ns=NAMESPACE).json()["namespaces"][0]["items"]
    (payments,) = configs
    assert [v["version"] for v in payments["versions"]] == [1, 2]
    assert payments["versions"][1]["value"]["api_token"] == {"$secret": "**********"}
    changed = {c["path"] for c in payments["versions"][1]["changes"]}
    assert {"$.retries", "$.api_token"} <= changed or {".retries", ".api_token"} <= changed


def test_requests_without_the_token_are_refused(stored: UiStore) -> None:
    with _client(stored, keyring=True) as fresh:
        _refused_then_admitted(fresh)


def _refused_then_admitted(fresh: TestClient) -> None:
    for path, params in PAGES:
        assert fresh.get(path, params=params).status_code == 403
        assert fresh.get(_api(path), params=params).status_code == 403
        assert fresh.get(path, params={**params, "token": "wrong"}).status_code == 403
    assert fresh.get("/static/inspector.css").status_code == 403
    first = fresh.get("/", params={"token": TOKEN})
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert fresh.get("/keys", params={"ns": NAMESPACE}).status_code == 200  # the cookie
    fresh.cookies.clear()
    fresh.cookies.set(cookie_name(TOKEN), "wrong")
    fresh.cookies.set(cookie_name("another server's token"), TOKEN)
    assert fresh.get("/keys", params={"ns": NAMESPACE}).status_code == 403


def test_only_get_and_the_store_is_never_written(stored: UiStore, client: TestClient) -> None:
    before = hashlib.sha256(stored.path.read_bytes()).hexdigest()
    for path, params in PAGES:
        _get(client, path, **params)
        _get(client, _api(path), **params)
        answer = client.post(path, params={**params, "token": TOKEN})
        assert answer.status_code == 405
    assert hashlib.sha256(stored.path.read_bytes()).hexdigest() == before
    backend = ReadOnlyBackend(open_backend(stored.url, create=False))
    with pytest.raises(BackendError, match="read-only"), backend:
        backend.delete(NAMESPACE, KEY)


def test_bad_parameters_are_400_and_missing_things_404(client: TestClient) -> None:
    assert client.get("/keys", params={"ns": "nope", "token": TOKEN}).status_code == 404
    assert client.get("/key", params={"ns": NAMESPACE, "key": "nope"}).status_code == 404
    assert client.get("/record", params={"ns": NAMESPACE, "key": KEY, "v": "x"}).status_code == 400
    assert client.get("/record", params={"ns": NAMESPACE, "key": KEY, "v": 9}).status_code == 404
    assert client.get("/api/keys").json() == {"error": "missing parameter 'ns'"}


def test_cli_without_a_store_or_the_extra_is_one_line(
    stored: UiStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["ui", f"sqlite:///{tmp_path / 'missing.db'}", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no SQLite database" in err
    assert main(["ui", stored.url, "--port", "70000"]) == 2
    assert "invalid port" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", stored.url, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    assert main(["ui", stored.url, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "install gotstate-persist[ui]" in err


def test_a_damaged_record_fails_alone(stored: UiStore, tmp_path: Path) -> None:
    copy = tmp_path / "damaged.db"
    shutil.copy(stored.path, copy)
    with sqlite3.connect(copy) as conn:  # the newest snapshot
        conn.execute(
            "UPDATE gotstate_persist_records SET blob = "
            "CAST(substr(blob, 1, 40) || X'00' || substr(blob, 42) AS BLOB) "
            "WHERE key = ? AND version = 2",
            (KEY,),
        )
    damaged = UiStore(f"sqlite:///{copy}", copy, stored.keys)
    with _client(damaged, keyring=True) as client:
        results = _get(client, "/api/verify", ns=NAMESPACE).json()["results"]
        problems = {r["key"]: r["problems"] for r in results}
        assert len(problems[KEY]) == 1
        assert problems[KEY][0].startswith("version 2: IntegrityError")
        assert problems[INVOICE_KEY] == []
        assert "FAILED" in _get(client, "/verify", ns=NAMESPACE).text
        refused = client.get("/record", params={"ns": NAMESPACE, "key": KEY, "v": 2})
        assert refused.status_code == 500 and "IntegrityError" in refused.text
        _get(client, "/record", ns=NAMESPACE, key=KEY, v=1)  # the others still show
        key = _get(client, "/api/key", ns=NAMESPACE, key=KEY).json()
        assert key["newest"] is None and "IntegrityError" in key["note"]
        assert len(key["timeline"]) == 5
