"""The inspector's pages about a namespace's own records: extensions and configurations.

Both are sealed records, so both need the keyring. Extensions are read
through the registry (listing, history, persisted stats) without importing
any extension's code; configurations are read schema-less, as the
``config`` commands read them: the stored payload marks every secret, so a
secret is shown redacted without any schema saying where it is, and diffs
between versions redact both sides. Nothing here reveals a secret.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._typedjson import typed_json
from ..config._commit import ConfigLog, value_key
from ..config._diff import diff
from ..config._secret import decode_untyped
from ..errors import PersistError
from ..extensions import ExtensionRegistry
from ..formats.config import ConfigValue
from ._reader import moment_us, versions_of
from ._records import Records

__all__ = ["configurations", "extensions"]


def extensions(records: Records, namespace: str) -> list[dict[str, Any]]:
    """Every registration (unregistered ones too) with its revisions and stats."""
    registry = ExtensionRegistry(records.pipeline(namespace))
    try:
        found = []
        for reg in registry.list(include_unregistered=True):
            history = [
                {
                    "revision": old.revision,
                    "changed_at": old.changed_at.isoformat(),
                    "status": old.status,
                    "version": old.version,
                    "reason": old.reason,
                }
                for old in registry.history(reg.name)
            ]
            found.append(
                {
                    "name": reg.name,
                    "version": reg.version,
                    "category": reg.category,
                    "isolation": reg.isolation,
                    "status": reg.status,
                    "reason": reg.reason,
                    "revision": reg.revision,
                    "changed_at": reg.changed_at.isoformat(),
                    "target": reg.target,
                    "code_sha256": reg.code_sha256,
                    "stats": typed_json(msgspec.to_builtins(reg.stats)) if reg.stats else None,
                    "history": history,
                }
            )
        return found
    finally:
        registry.close()


def configurations(records: Records, namespace: str) -> list[dict[str, Any]]:
    """Every stored configuration: its versions (values redacted) and each version's changes."""
    pipeline = records.pipeline(namespace)
    log = ConfigLog(pipeline)
    _number, commit = log.newest()
    found = []
    for name in sorted(commit.heads):
        key = value_key(name)
        versions: list[dict[str, Any]] = []
        previous: Any = None
        for info in versions_of(pipeline.backend, namespace, key):
            try:
                _info, stored = pipeline.load(key, info.version)
            except PersistError as exc:
                versions.append({"version": info.version, "error": f"{type(exc).__name__}"})
                continue
            if not isinstance(stored, ConfigValue):
                continue
            payload = decode_untyped(stored.payload)
            changes = [
                {"path": change.path, "old": typed_json(change.old), "new": typed_json(change.new)}
                for change in diff(previous, payload)
            ]
            previous = payload
            versions.append(
                {
                    "version": stored.version,
                    "changed_at": moment_us(stored.changed_at_us, timespec="auto"),
                    "reason": stored.reason,
                    "value": typed_json(payload),  # each secret {"$secret": "**********"}
                    "changes": changes,
                }
            )
        found.append({"name": name, "head": commit.heads[name].version, "versions": versions})
    return found
