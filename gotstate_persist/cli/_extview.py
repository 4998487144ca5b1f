"""How the ``ext`` commands lay out registrations, drift and the doctor's report.

Kept apart from the commands so every row is built one way: each value read
from a store or a disk (names, targets, reasons, file paths) passes through
:func:`~gotstate_persist._names.printable` here, before any table sees it.
A table is drawn by ``rich`` on a terminal and as plain aligned columns
anywhere else (a pipe, a file, CI), so scripts read output that does not
depend on the width of a terminal. Cells are ``rich`` ``Text``, never markup:
a reason holding ``[bold]`` is printed as written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TextIO

from .._names import printable
from ..extensions import ExtensionStats, Registration, ResourceLimits
from ..extensions._doctor import DoctorReport, LimitProbe
from ..extensions._pin import Drift
from ._jsondoc import fields_json
from ._output import print_table
from ._quota import human_size

__all__ = [
    "REASON_CHARS",
    "counted",
    "doctor_lines",
    "drift_lines",
    "history_rows",
    "listing_row",
    "registration_json",
    "show_rows",
    "write_table",
]

#: How much of a reason ``ext ls`` shows (``ext show`` prints all of it).
REASON_CHARS = 60
_TIME = "%Y-%m-%d %H:%M:%S"


def write_table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    """``rows`` under ``header``: a rich table on a terminal, plain columns elsewhere."""
    if not out.isatty():
        print_table([header, *rows], out)
        return
    # imported here: only a terminal needs it, and it costs start-up time
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, highlight=False)
    for index, title in enumerate(header):
        # only the last column (a reason, a value) wraps, and it folds long words (a
        # digest, a path) rather than cutting them short
        last = index == len(header) - 1
        table.add_column(title, no_wrap=not last, overflow="fold" if last else "ellipsis")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    Console(file=out, highlight=False, markup=False, emoji=False).print(table)


def _utc(moment: datetime) -> str:
    """``moment`` in UTC as the tables show it (a naive time is taken as UTC already)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime(_TIME)


def counted(count: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 3] + "..."


def listing_row(namespace: str, reg: Registration) -> list[str]:
    """One ``ext ls`` row (the reason cut to :data:`REASON_CHARS`)."""
    return [
        printable(namespace),
        printable(reg.name),
        printable(reg.version),
        reg.category,
        reg.isolation,
        reg.status,
        str(reg.revision),
        _utc(reg.changed_at),
        printable(_cut(reg.reason, REASON_CHARS)),
    ]


def history_rows(revisions: list[Registration]) -> list[list[str]]:
    """One ``ext history`` row per revision, oldest first."""
    return [
        [
            str(reg.revision),
            _utc(reg.changed_at),
            reg.status,
            printable(reg.version),
            printable(reg.reason),
        ]
        for reg in revisions
    ]


def _value(field: str, value: object) -> str:
    if value is None:
        return "none"
    if field.endswith("_bytes") and isinstance(value, int):
        return f"{value} ({human_size(value)})"
    if field.endswith("_ms") and isinstance(value, float):
        return f"{value:.3f} ms"
    return printable(str(value))


def _limit_rows(limits: ResourceLimits) -> list[list[str]]:
    return [
        [f"limits.{field}", _value(field, getattr(limits, field))]
        for field in ResourceLimits.__struct_fields__
    ]


def _stats_rows(stats: ExtensionStats | None) -> list[list[str]]:
    if stats is None:
        return [["stats", "none persisted yet (written when it is deactivated or fails)"]]
    rows = []
    for field in ExtensionStats.__struct_fields__:
        value = getattr(stats, field)
        if field == "rejected":
            shown = ", ".join(f"{printable(k)}={v}" for k, v in sorted(value.items()))
            rows.append(["stats.rejected", shown or "none"])
        else:
            rows.append([f"stats.{field}", _value(field, value)])
    return rows


def show_rows(namespace: str, reg: Registration, *, files: bool) -> list[list[str]]:
    """Every field of ``reg``, one row each (limits and stats one row per field)."""
    location = reg.location
    where = location.module if location.kind == "module" else location.file
    rows = [
        ["namespace", printable(namespace)],
        ["name", printable(reg.name)],
        ["version", printable(reg.version)],
        ["category", reg.category],
        ["status", reg.status],
        ["reason", printable(reg.reason)],
        ["revision", str(reg.revision)],
        ["changed_at", reg.changed_at.isoformat()],
        ["target", printable(reg.target)],
        ["isolation", reg.isolation],
        ["location", f"{location.kind} {printable(where)}"],
        ["requires", printable(reg.requires) or "none"],
        ["states", printable(", ".join(reg.states)) or "all"],
        ["interface", printable(", ".join(reg.interface))],
        ["code_sha256", reg.code_sha256],
        ["files", f"{counted(len(reg.files), 'file')} pinned under {printable(location.root)}"],
    ]
    if files:
        rows.extend([f"  {printable(path)}", digest] for path, digest in reg.files.items())
    return rows + _limit_rows(reg.limits) + _stats_rows(reg.stats)


def registration_json(namespace: str, reg: Registration) -> dict[str, Any]:
    """``reg`` and its namespace as a JSON object (escaped when the document is written)."""
    return {"namespace": namespace, **fields_json(reg)}


def drift_lines(namespace: str, reg: Registration | None, name: str, drift: Drift) -> list[str]:
    """``ok`` or ``CHANGED`` for one registration, then one line per differing file."""
    shown = f"{printable(namespace)}/{printable(name)}"
    if drift.clean:
        count = len(reg.files) if reg is not None else 0
        return [f"ok       {shown} ({counted(count, 'file')})"]
    where = f" (files under {printable(reg.location.root)})" if reg is not None else ""
    lines = [f"CHANGED  {shown}{where}"]
    for label, paths in (
        ("changed", drift.changed),
        ("added", drift.added),
        ("removed", drift.removed),
    ):
        lines.extend(f"         {label:8} {printable(path)}" for path in paths)
    return lines


def _limit_lines(probe: LimitProbe) -> list[str]:
    if not probe.settable:
        return [f"  {probe.resource:14} {probe.note}"]

    def shown(value: int | None) -> str:
        if value is None:
            return "unlimited"
        return human_size(value) if probe.field.endswith("_bytes") else str(value)

    return [
        f"  {probe.resource:14} {probe.field or '-':16} soft {shown(probe.soft)}, hard "
        f"{shown(probe.hard)}; a worker with default limits gets {shown(probe.effective)}",
        f"  {'':14} {'':16} {probe.note}",
    ]


def doctor_lines(report: DoctorReport) -> list[str]:
    """The doctor's report for a person: layers, then the ladder, then the gaps."""
    mode = (
        "-I -c bootstrap (this package is not what -I would import)"
        if report.bootstrap
        else "-I -m"
    )
    yes = {True: "yes", False: "NO"}
    lines = [
        f"python:        {printable(report.python)}",
        f"  starts isolated: {yes[report.python_starts_isolated]}: {report.start_note}",
        f"  worker start: {mode}",
        f"user:          uid {report.uid} (workers run as the same user)",
        "rlimits a worker lowers before importing an extension:",
        *(line for probe in report.limits for line in _limit_lines(probe)),
        f"cgroup v2:     {yes[report.cgroup.v2]}"
        + (f", own cgroup {printable(report.cgroup.path)}" if report.cgroup.path else "")
        + f", delegated: {yes[report.cgroup.delegated]}: {printable(report.cgroup.note)}",
    ]
    prefix = report.prefix
    if prefix.words:
        words = printable(" ".join(prefix.words))
        found = printable(prefix.command) if prefix.found else "NOT FOUND"
        lines.append(f"worker prefix: {words} -> {found}: {printable(prefix.note)}")
    else:
        lines.append(f"worker prefix: none: {prefix.note}")
    lines.append("claims ladder:")
    for probe in report.ladder:
        mark = "applies" if probe.applies else "no"
        lines.append(f"  {probe.rung:10} {mark:8} {probe.meaning}")
    lines.append(f"highest claim for a worker on this host: {report.rung}")
    lines.append("gaps:")
    lines.extend(f"  - {gap}" for gap in report.gaps)
    return lines
