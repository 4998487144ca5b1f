"""Copy every version of every key from one backend to another, verified and resumable.

Sealed blobs are bound to (namespace, key, version), so a copy keeps all three
and moves the bytes verbatim: the destination then holds exactly what the
source held, readable with the same keyring, with the same version numbers
and timestamps. Every blob is authenticated and decoded before it is written,
so a damaged source record is reported instead of being propagated.

Resuming is natural: versions already present at the destination are
skipped (backends create versions atomically, so "present" means complete).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ._pipeline import RecordPipeline
from .backends import Backend
from .errors import FormatError, IntegrityError, PersistError, VersionConflict
from .sealing import KeyRing

__all__ = ["CopyReport", "copy_records"]

logger = logging.getLogger(__name__)

#: progress(done, total) after each record; total counts the source's records.
Progress = Callable[[int, int], None]


@dataclass
class CopyReport:
    """What a copy did: records copied, already present, and those that failed."""

    copied: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, int, str]] = field(default_factory=list)


def copy_records(
    source: Backend,
    destination: Backend,
    keyring: KeyRing,
    *,
    namespaces: list[str] | None = None,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy (namespace, key, version) records verbatim, verifying each first."""
    report = CopyReport()
    chosen = namespaces if namespaces is not None else source.namespaces()
    plan = []
    for namespace in chosen:
        for key in source.keys(namespace):
            try:
                plan += [(namespace, key, info) for info in source.versions(namespace, key)]
            except (FormatError, IntegrityError) as exc:  # damaged metadata: report, go on
                logger.warning("not copied: %s/%s: %s", namespace, key, exc)
                report.failed.append((namespace, key, 0, f"{type(exc).__name__}: {exc}"))
    total = len(plan)
    verifiers = {ns: RecordPipeline(source, keyring=keyring, namespace=ns) for ns in chosen}
    present: dict[tuple[str, str], set[int]] = {}
    for done, (namespace, key, info) in enumerate(plan, start=1):
        where = (namespace, key)
        if where not in present:
            present[where] = {i.version for i in destination.versions(namespace, key)}
        if info.version in present[where]:
            report.skipped += 1
        else:
            try:
                _, blob = source.get(namespace, key, info.version)
                verifiers[namespace].verify(info, blob)
                head = destination.head(namespace, key)
                if info.version <= head.last_version:
                    raise VersionConflict(
                        f"the destination already used version {info.version} of this key "
                        "(it was deleted there); copy into an empty destination"
                    )
                destination.put(
                    namespace,
                    key,
                    info.version,
                    blob,
                    kind=info.kind,
                    format_version=info.format_version,
                    created_at_us=info.created_at_us,
                )
                report.copied += 1
            except PersistError as exc:
                logger.warning("not copied: %s/%s v%d: %s", namespace, key, info.version, exc)
                report.failed.append((namespace, key, info.version, f"{type(exc).__name__}: {exc}"))
        if progress is not None:
            progress(done, total)
    return report
