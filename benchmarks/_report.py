"""One way for every benchmark to report a figure, so ``make bench`` can end with one table.

A benchmark calls ``figure(...)`` where it used to print a figure: the call
prints the benchmark's own line unchanged (``line``; nothing when the figure is
only shown in a table printed later) and, when the environment variable
``BENCH_RESULTS`` names a file, appends the figure to it as one JSON line. Run
on its own, a benchmark prints exactly what it printed before and writes
nothing. ``report_table.py`` reads the file and prints the table of every
figure of the run, the machine it ran on and how each figure is measured.

Units: ratios are ``x speed`` (ours / baseline in operations per second, or
baseline / ours in time per call: higher is better), ``x time`` (ours /
baseline in time: lower is better) and ``x size`` (a size as a multiple of
another); everything else is an absolute unit (``us``, ``ms``, ``ops/s``...).
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_VARIABLE = "BENCH_RESULTS"
ROOT = Path(__file__).resolve().parent.parent

_MACHINE_WRITTEN: set[int] = set()  # the processes that wrote the machine record


def results_path() -> Path | None:
    """The file figures are appended to, or None when no results file was asked for."""
    given = os.environ.get(RESULTS_VARIABLE, "").strip()
    return Path(given) if given else None


def format_value(value: float | int | str, unit: str, *, precise: bool = False) -> str:
    """``value`` with its unit, as the table shows it: ``0.85x speed``, ``12,345 ops/s``.

    ``precise`` gives ratios a third decimal, for one that rounds to its target.
    """
    if isinstance(value, str):
        return value
    if unit.startswith("x"):  # a ratio: two decimals, or two significant digits below 0.1
        text = f"{value:.2g}" if 0 < abs(value) < 0.1 else f"{value:.{3 if precise else 2}f}"
        return f"{text}x {unit[1:].strip()}".rstrip()
    if isinstance(value, int) or abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def figure(
    section: str,
    name: str,
    value: float | int | str,
    unit: str = "",
    *,
    detail: str = "",
    at_least: float | None = None,
    at_most: float | None = None,
    target: str | None = None,
    met: bool | None = None,
    how: str = "",
    line: str | None = None,
) -> bool | None:
    """Print ``line`` (if given) and record one figure; returns whether it met its target.

    ``at_least``/``at_most`` give a numeric target in ``unit`` (the target text
    and ``met`` follow from it); a benchmark whose verdict is not a plain
    bound passes ``target`` text and ``met`` itself. ``detail`` holds the
    absolute numbers behind a ratio; ``how`` says in one line what is timed,
    against which baseline, and which way the ratio goes.
    """
    if at_least is not None or at_most is not None:
        if isinstance(value, str):
            raise TypeError(f"{section}: {name}: a bound needs a numeric value")
        bound = at_least if at_least is not None else at_most
        assert bound is not None
        sign = ">=" if at_least is not None else "<="
        target = f"{sign} {format_value(bound, unit)}"
        met = value >= bound if at_least is not None else value <= bound
    if line is not None:
        print(line, flush=True)
    path = results_path()
    if path is not None:
        _append(
            path,
            {
                "bench": Path(sys.argv[0]).stem,
                "section": section,
                "figure": name,
                "value": _rounded(value),
                "unit": unit,
                "detail": detail,
                "target": target,
                "met": met,
                "how": how,
            },
        )
    return met


def note(name: str, value: str) -> None:
    """Record a fact about the machine the run used (e.g. the PostgreSQL server's version)."""
    path = results_path()
    if path is not None:
        _append(path, {"note": name, "value": value})


def note_postgres(url: str) -> None:
    """Record the version of the PostgreSQL server at ``url`` (only when recording)."""
    if results_path() is None:
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    if row is not None:
        note("PostgreSQL", str(row[0]))


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, Python, SQLite, OS, commit, date."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": f"{platform.system()} {platform.release()}",
        "commit": _commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def _rounded(value: float | int | str) -> float | int | str:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    if os.getpid() not in _MACHINE_WRITTEN:  # once per process: each benchmark is one
        _MACHINE_WRITTEN.add(os.getpid())
        lines.append(json.dumps({"machine": machine(), "at": time.time()}))
    lines.append(json.dumps(record))
    with path.open("a", encoding="utf-8") as out:
        out.write("".join(f"{line}\n" for line in lines))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+changes" if dirty else head
