"""What the inspector reads with a keyring: records decoded, journal events, diffs, verify.

Records are opened exactly as ``gotstate-persist show`` opens them
(``RecordPipeline.inspect``: authenticated, then decoded, typed when the
kind is registered), and values leave as typed JSON (``_typedjson``): a
Decimal stays a Decimal, a Struct this reader cannot decode hides only
itself, a secret is redacted. The diff of two snapshots is the one the
``diff`` command computes (``cli._historyview.snapshot_changes``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._names import printable
from .._pipeline import RecordPipeline
from .._typedjson import Undecodable, tagged_json, typed_json
from ..cli._historyview import snapshot_changes
from ..errors import InvalidArgument, NotFound, PersistError
from ..formats import MachineSnapshot, SubmachineSnapshot
from ..formats.machine import MachineSnapshotV2, decode_structure
from ..runtime import read_journal
from ..sealing import format_key_id
from ._diagram import diagrams
from ._reader import Inspector, moment, versions_of

__all__ = ["Records"]

#: What a page says in place of decoded content when the inspector has no keyring.
NO_KEYRING = "no keyring given (--keys FILE): metadata only"


class Records:
    """Decoding reads of one inspector's store; each needs the keyring."""

    def __init__(self, inspector: Inspector) -> None:
        self.inspector = inspector

    def pipeline(self, namespace: str) -> RecordPipeline:
        keyring = self.inspector.keyring
        if keyring is None:
            raise InvalidArgument(NO_KEYRING)
        return RecordPipeline(
            self.inspector.backend,
            keyring=keyring,
            namespace=namespace,
            formats=self.inspector.formats,
        )

    def document(self, namespace: str, key: str, version: int) -> dict[str, Any]:
        """One version: where and how it is stored, its content, its state diagram."""
        pipeline = self.pipeline(namespace)
        inspection = pipeline.inspect(key, version)
        info = inspection.info
        header = inspection.header
        document: dict[str, Any] = {
            "namespace": namespace,
            "key": key,
            "version": version,
            "kind": info.kind,
            "format_version": info.format_version,
            "size": info.size,
            "saved": moment(info),
            "sealed_with": f"{header.algorithm} key {format_key_id(header.key_id)}",
            "machine": None,
            "diagrams": [],
        }
        record = inspection.record
        if isinstance(record, MachineSnapshot):
            document["machine"] = self._machine(record)
            document["diagrams"] = diagrams(record)
        elif inspection.typed:
            document["record"] = typed_json(record)
        else:
            document["note"] = "kind not registered (--formats MODULE:ATTR): fields shown untyped"
            document["record"] = typed_json(record)
        return document

    def _machine(self, snapshot: MachineSnapshot | SubmachineSnapshot) -> dict[str, Any]:
        type_for = self.inspector.formats.type_for
        view: dict[str, Any] = {
            "machine": snapshot.machine_type,
            "started": snapshot.started,
            "current_state": snapshot.current,
            "history": dict(snapshot.history),
            "state_data": {
                name: tagged_json(tagged, type_for) for name, tagged in snapshot.data.items()
            },
            "states": len(decode_structure(snapshot).names),
            "fingerprint": snapshot.fingerprint,
        }
        if isinstance(snapshot, MachineSnapshotV2):
            view["journal_seq"] = snapshot.journal_seq
        if isinstance(snapshot, MachineSnapshot):
            view["submachines"] = {
                "/".join(sub.path): self._machine(sub) for sub in snapshot.submachines
            }
        return view

    def events(self, namespace: str, key: str, since: int = 0) -> dict[int, dict[str, Any]]:
        """The key's journal entries after ``since`` by sequence: event, source -> target,
        actor, and the event's metadata and caller's meta as typed JSON."""
        pipeline = self.pipeline(namespace)
        formats = self.inspector.formats

        def structs(kind: str, version: int, encoded: bytes) -> msgspec.Struct:
            try:
                return formats.decode_struct(kind, version, encoded)
            except PersistError as exc:
                return Undecodable(str(exc), kind, version)

        found = {}
        for entry in read_journal(pipeline, key, since=since, structs=structs):
            actor = entry.meta.get("actor")
            found[entry.seq] = {
                "event": entry.event.name,
                "source": entry.source,
                "target": entry.target,
                "actor": actor if isinstance(actor, str) else None,
                "meta": typed_json(entry.meta),
                "metadata": typed_json(entry.event.metadata),
            }
        return found

    def diff(self, namespace: str, key: str, old: int, new: int) -> list[dict[str, Any]]:
        """What changed between two snapshot versions, as the ``diff`` command says it."""
        pipeline = self.pipeline(namespace)
        snapshots = [self._snapshot(pipeline, key, version) for version in (old, new)]
        changes = snapshot_changes(snapshots[0], snapshots[1], pipeline.formats)
        return [change._asdict() for change in changes]

    def _snapshot(self, pipeline: RecordPipeline, key: str, version: int) -> MachineSnapshot:
        kept = [info.version for info in versions_of(pipeline.backend, pipeline.namespace, key)]
        if version not in kept:
            raise NotFound(f"key {key!r} has no version {version}")
        record = pipeline.inspect(key, version).record
        if not isinstance(record, MachineSnapshot):
            raise InvalidArgument(f"version {version} of key {key!r} is not a machine snapshot")
        return record

    def verify(self, namespace: str, keys: list[str]) -> list[dict[str, Any]]:
        """Each key's versions authenticated and decoded: ok, or what failed per version."""
        pipeline = self.pipeline(namespace)
        results = []
        for key in keys:
            problems = []
            versions = versions_of(pipeline.backend, namespace, key)
            for info in versions:
                try:
                    pipeline.inspect(key, info.version)
                except PersistError as exc:
                    problems.append(
                        f"version {info.version}: {type(exc).__name__}: {printable(str(exc))}"
                    )
            results.append({"key": key, "versions": len(versions), "problems": problems})
        return results
