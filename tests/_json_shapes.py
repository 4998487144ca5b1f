"""The documented shapes of the ``--json`` documents (docs/json.md), as test-side Structs.

Unknown keys are forbidden: a document with a key this file (and so the page)
does not name, or a value of another type, fails to parse.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class Doc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    shape_version: Literal[1]
    command: str


class LsKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    namespace: str
    key: str
    versions: int
    newest: int | None
    kind: str
    format_version: int
    size: int
    saved: str


class LsDoc(Doc, frozen=True, forbid_unknown_fields=True):
    keys: list[LsKey]


class VersionItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    size: int
    saved: str
    kind: str
    format_version: int
    key_id: str


class VersionsDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    key: str
    versions: list[VersionItem]


class MachineView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    machine: str
    started: bool
    current_state: str | None
    history: dict[str, str]
    state_data: dict[str, Any]
    states: int
    fingerprint: str
    submachines: dict[str, Any]


class EventView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    priority: int
    metadata: Any


class Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int
    at: str
    event: EventView
    source: str | None
    target: str | None
    meta: Any
    snapshot_version: int


class ShowDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    key: str
    version: int
    kind: str
    format_version: int
    size: int
    saved: str
    sealed_with: str
    record: MachineView


class ShowAtDoc(ShowDoc, frozen=True, forbid_unknown_fields=True):
    at: str
    journal: list[Entry]


class LogEntry(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="entry"
):
    at: str
    seq: int
    event: str
    source: str | None
    target: str | None
    actor: str | None


class LogSnapshot(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="snapshot"
):
    at: str
    version: int
    kind: str
    format_version: int
    size: int


class LogDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    key: str
    items: list[LogEntry | LogSnapshot]


class JournalDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    key: str
    since: int
    entries: list[Entry]


class Change(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str
    change: Literal["added", "removed", "changed"]
    old: Any
    new: Any


class DiffDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    key: str
    old: int
    new: int
    changes: list[Change]


class Counts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    bytes: int
    records: int
    keys: int


class QuotaView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_bytes: int | None
    max_records: int | None
    max_keys: int | None
    max_blob_bytes: int | None
    max_versions_per_key: int | None
    retention: str
    max_writes_per_second: int | None
    max_reads_per_second: int | None


class UsageNamespace(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    namespace: str
    bytes: int
    records: int
    keys: int
    drift: Counts | None
    quota: QuotaView | None


class UsageDoc(Doc, frozen=True, forbid_unknown_fields=True):
    recounted: bool
    exact_counters: bool
    namespaces: list[UsageNamespace]


class VerifiedKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    namespace: str
    key: str | None
    versions: int
    ok: bool
    problems: list[str]


class KeyIdCount(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key_id: str
    records: int
    primary: bool


class VerifyDoc(Doc, frozen=True, forbid_unknown_fields=True):
    checked: int
    verified: int
    failed: int
    keys: list[VerifiedKey]
    key_ids: list[KeyIdCount]


class Registration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    namespace: str
    name: str
    category: str
    version: str
    target: str
    isolation: str
    limits: dict[str, int | float | None]
    code_sha256: str
    files: dict[str, str]
    interface: list[str]
    status: str
    reason: str
    changed_at: str
    location: dict[str, str]
    requires: str
    states: list[str]
    stats: dict[str, Any] | None
    has_settings: bool
    settings_fields: list[str]
    secret_fields: list[str]
    secrets: list[str]
    revision: int


class ExtLsDoc(Doc, frozen=True, forbid_unknown_fields=True):
    extensions: list[Registration]


class ExtShowDoc(Doc, frozen=True, forbid_unknown_fields=True):
    registration: Registration


class ExtChangeDoc(ExtShowDoc, frozen=True, forbid_unknown_fields=True):
    written: bool


class ExtHistoryDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    name: str
    revisions: list[Registration]


class ExtDrift(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    namespace: str
    name: str
    changed: list[str]
    added: list[str]
    removed: list[str]


class ExtVerifyDoc(Doc, frozen=True, forbid_unknown_fields=True):
    checked: int
    matching: int
    extensions: list[ExtDrift]


class DoctorReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    python: str
    python_starts_isolated: bool
    start_note: str
    worker_command: list[str]
    bootstrap: bool
    uid: int
    limits: list[dict[str, Any]]
    cgroup: dict[str, Any]
    prefix: dict[str, Any]
    ladder: list[dict[str, Any]]
    rung: str
    gaps: list[str]


class ExtDoctorDoc(Doc, frozen=True, forbid_unknown_fields=True):
    report: DoctorReport


class ConfigRefView(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    version: int
    changed_at: str
    reason: str


class ConfigListed(ConfigRefView, frozen=True, forbid_unknown_fields=True):
    namespace: str


class ConfigLsDoc(Doc, frozen=True, forbid_unknown_fields=True):
    configurations: list[ConfigListed]


class ConfigGetDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    name: str
    version: int
    changed_at: str
    reason: str
    value: Any


class ConfigWrittenDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    name: str
    version: int
    changed_at: str
    reason: str


class ConfigRollbackDoc(ConfigWrittenDoc, frozen=True, forbid_unknown_fields=True):
    to: int


class ConfigHistoryDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    name: str
    versions: list[ConfigRefView]


class ConfigChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str
    old: Any
    new: Any


class ConfigDiffDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    name: str
    old: int
    new: int
    changes: list[ConfigChange]


class ExplainedField(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    path: str
    value: Any
    source: str
    overridden: list[str]


class ConfigExplainDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    name: str
    fields: list[ExplainedField]


class RecordShowDoc(Doc, frozen=True, forbid_unknown_fields=True):
    namespace: str
    key: str
    version: int
    kind: str
    format_version: int
    size: int
    saved: str
    sealed_with: str
    note: str
    record: dict[str, Any]
