"""How a decoded record reads on the command line: ``show``'s document, shared.

``show`` prints one record, ``show --at`` the record in force at a moment
and ``diff`` the changes between two machine snapshots; all three turn a
stored value into builtins here, so a value reads the same in each and a
value this tool cannot decode is shown as such (never failing the whole
record) in each. Values are user data, written as typed JSON
(``_typedjson``: ``{"$decimal": "19.99"}``, never a Python repr; a Struct
this tool cannot decode is ``$undecodable`` and hides only itself) and
escaped only when the document is written (``terminal_safe_json``), as
every value read from a store is.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._pipeline import Inspection, RecordPipeline
from .._typedjson import record_fields, tagged_json, typed_json
from ..errors import PersistError
from ..formats import MachineSnapshot, SubmachineSnapshot
from ..formats._registry import FormatRegistry
from ..formats._values import UnsupportedValue, decode_value
from ..formats.machine import decode_structure
from ..sealing import format_key_id
from ..store import snapshot_ref

__all__ = ["CannotDecode", "record_document", "shown_data", "snapshot_view", "state_data"]


class CannotDecode(msgspec.Struct, frozen=True):
    """A state's data this tool could not decode whole (a Struct kind it does not know, ...).

    ``diff`` compares such a state as stored; ``tagged`` is that stored form,
    shown with every Struct it can decode decoded and the others alone
    ``$undecodable`` (:func:`~gotstate_persist._typedjson.tagged_json`).
    """

    reason: str
    tagged: Any = None


def state_data(
    snapshot: MachineSnapshot | SubmachineSnapshot, formats: FormatRegistry
) -> dict[str, Any]:
    """Each state's data decoded, or :class:`CannotDecode` for a state this tool cannot read."""
    data: dict[str, Any] = {}
    for name, tagged in snapshot.data.items():
        try:
            data[name] = decode_value(tagged, formats.type_for)
        except (UnsupportedValue, PersistError) as exc:
            data[name] = CannotDecode(str(exc), tagged)
    return data


def shown_data(value: Any, formats: FormatRegistry) -> Any:
    """A decoded state's data as typed JSON; one that could not be decoded, leniently."""
    if isinstance(value, CannotDecode):
        return tagged_json(value.tagged, formats.type_for)
    return typed_json(value)


def snapshot_view(
    snapshot: MachineSnapshot | SubmachineSnapshot, formats: FormatRegistry
) -> dict[str, Any]:
    """A machine snapshot (and its submachines) as ``show`` prints it."""
    # each state leniently: an undecodable Struct hides only itself, never its state
    data = {name: tagged_json(tagged, formats.type_for) for name, tagged in snapshot.data.items()}
    view: dict[str, Any] = {
        "machine": snapshot.machine_type,
        "started": snapshot.started,
        "current_state": snapshot.current,
        "history": snapshot.history,
        "state_data": data,
        "states": len(decode_structure(snapshot).names),
        "fingerprint": snapshot.fingerprint,
    }
    if isinstance(snapshot, MachineSnapshot):
        view["submachines"] = {
            "/".join(sub.path): snapshot_view(sub, formats) for sub in snapshot.submachines
        }
    return view


def record_document(pipeline: RecordPipeline, inspection: Inspection) -> dict[str, Any]:
    """``show``'s document of one record (``pipeline.inspect``'s): where and how it is
    stored, and the record decoded."""
    ref = snapshot_ref(inspection.info, pipeline.namespace)
    record, typed = inspection.record, inspection.typed
    header = inspection.header
    meta: dict[str, Any] = {
        "namespace": ref.namespace,
        "key": ref.key,
        "version": ref.version,
        "kind": ref.kind,
        "format_version": ref.format_version,
        "size": ref.size,
        "saved": ref.created_at.isoformat(),
        "sealed_with": f"{header.algorithm} key {format_key_id(header.key_id)}",
    }
    if isinstance(record, MachineSnapshot):
        body: Any = snapshot_view(record, pipeline.formats)
    elif typed:
        body = record_fields(record)
    else:
        meta["note"] = "kind not registered in this tool: fields shown untyped"
        body = typed_json(record)
    return {**meta, "record": body}
