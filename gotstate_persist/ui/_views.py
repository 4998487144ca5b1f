"""Each page's data, from the request's query parameters (``ns``, ``key``, ``v``, ...).

Parameters are checked here, once for HTML and JSON alike: a namespace
that does not exist or a key without versions is ``NotFound`` (404), a
malformed number ``InvalidArgument`` (400). Names travel in the query
string, never in the path, so a key may hold any character, ``/`` included.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ..errors import InvalidArgument, NotFound, PersistError
from ._admin import configurations, extensions
from ._reader import Inspector, versions_of
from ._records import NO_KEYRING, Records

__all__ = ["Views"]

_MAX_NUMBER = 10**18


def _number(request: Request, name: str, default: int | None = None) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        if default is None:
            raise InvalidArgument(f"missing parameter {name!r}")
        return default
    if not text.isdigit() or not 1 <= int(text) <= _MAX_NUMBER:
        raise InvalidArgument(f"parameter {name!r} must be a whole number >= 1")
    return int(text)


def _text(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise InvalidArgument(f"missing parameter {name!r}")
    return value


class Views:
    """The data of every page of one inspector."""

    def __init__(self, inspector: Inspector) -> None:
        self.inspector = inspector
        self.records = Records(inspector)

    def _namespace(self, request: Request) -> str:
        namespace = _text(request, "ns")
        if not self.inspector.has_namespace(namespace):
            raise NotFound(f"no namespace {namespace!r} in this store")
        return namespace

    def _decoded(self) -> bool:
        return self.inspector.keyring is not None

    def namespaces(self, _request: Request) -> dict[str, Any]:
        return {"namespaces": self.inspector.namespaces()}

    def keys(self, request: Request) -> dict[str, Any]:
        namespace = self._namespace(request)
        query = request.query_params.get("q", "")
        return self.inspector.keys_page(namespace, query, _number(request, "page", 1))

    def key(self, request: Request) -> dict[str, Any]:
        """A key's timeline, journal events when decoded, and the newest snapshot's diagram."""
        namespace = self._namespace(request)
        key = _text(request, "key")
        timeline, older = self.inspector.timeline(namespace, key)
        if not timeline:
            raise NotFound(f"key {key!r} has no snapshot and no journal entry in {namespace!r}")
        newest: dict[str, Any] | None = None
        note = None
        if not self._decoded():
            note = NO_KEYRING
        else:  # a record that fails to open is said so; the timeline still shows
            try:
                shown = [item["number"] for item in timeline if item["type"] == "entry"]
                since = min(shown) - 1 if shown else 0
                events = self.records.events(namespace, key, since=since) if shown else {}
                for item in timeline:
                    if item["type"] == "entry":
                        item.update(events.get(item["number"], {}))
                snapshots = [item for item in timeline if item["type"] == "snapshot"]
                if snapshots:
                    newest = self.records.document(namespace, key, snapshots[-1]["number"])
            except PersistError as exc:
                note = f"cannot decode every record of this key: {type(exc).__name__}: {exc}"
        return {
            "namespace": namespace,
            "key": key,
            "timeline": timeline,
            "older": older,
            "newest": newest,
            "note": note,
        }

    def record(self, request: Request) -> dict[str, Any]:
        namespace = self._namespace(request)
        key = _text(request, "key")
        version = _number(request, "v")
        kept = [info.version for info in versions_of(self.inspector.backend, namespace, key)]
        if version not in kept:
            raise NotFound(f"key {key!r} has no version {version} in {namespace!r}")
        if not self._decoded():
            return {"namespace": namespace, "key": key, "version": version, "note": NO_KEYRING}
        return {"note": None, **self.records.document(namespace, key, version)}

    def diff(self, request: Request) -> dict[str, Any]:
        namespace = self._namespace(request)
        key = _text(request, "key")
        old, new = _number(request, "a"), _number(request, "b")
        versions = [info.version for info in versions_of(self.inspector.backend, namespace, key)]
        base = {"namespace": namespace, "key": key, "a": old, "b": new, "versions": versions}
        if not self._decoded():
            return {**base, "changes": None, "note": NO_KEYRING}
        return {**base, "changes": self.records.diff(namespace, key, old, new), "note": None}

    def verify(self, request: Request) -> dict[str, Any]:
        """The keys of one page of the keys listing, each authenticated and decoded."""
        page = self.keys(request)
        if not self._decoded():
            return {**page, "results": None, "note": NO_KEYRING}
        names = [row["key"] for row in page["keys"]]
        results = self.records.verify(page["namespace"], names)
        return {**page, "results": results, "note": None}

    def _per_namespace(self, request: Request, read: Any) -> dict[str, Any]:
        if not self._decoded():
            return {"namespaces": [], "note": NO_KEYRING}
        wanted = request.query_params.get("ns")
        names = [self._namespace(request)] if wanted else self.inspector.backend.namespaces()
        return {
            "namespaces": [{"name": name, "items": read(self.records, name)} for name in names],
            "note": None,
        }

    def extensions(self, request: Request) -> dict[str, Any]:
        return self._per_namespace(request, extensions)

    def config(self, request: Request) -> dict[str, Any]:
        return self._per_namespace(request, configurations)
