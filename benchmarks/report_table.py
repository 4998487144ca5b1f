"""Print one markdown table of every figure a ``make bench`` run produced.

Run with ``.venv/bin/python benchmarks/report_table.py RESULTS.jsonl``; ``make
bench`` runs it last on the file its benchmarks appended to (``BENCH_RESULTS``,
see ``_report.py``). It prints the table (section, figure, value, the absolute
numbers behind it, target, met), a count of targets met, the machine the run
used and one line per kind of figure saying how it is measured. The README's
"Performance" section is this output of one run, and
``benchmarks/results.jsonl`` is that run's file (tests/test_readme_performance.py
checks that the two agree).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import format_value

COLUMNS = ("section", "figure", "value", "details", "target", "met")


@dataclass
class Run:
    """The figures of one run, in the order they were reported, and its machine."""

    figures: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def load(path: Path) -> Run:
    run = Run()
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number}: not a JSON line ({exc.msg})") from None
        if "machine" in record:
            run.machine = run.machine or record["machine"]  # the run's first benchmark
        elif "note" in record:
            run.notes[record["note"]] = record["value"]
        else:
            run.figures.append(record)
    return run


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _met(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "**no**")


def table(run: Run) -> list[str]:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for f in run.figures:
        value = format_value(f["value"], f["unit"])
        if f["met"] is False and f["target"] and f["target"].endswith(f" {value}"):
            value = format_value(f["value"], f["unit"], precise=True)  # not 1.00 vs >= 1.00
        cells = (
            f["section"],
            f["figure"],
            value,
            f["detail"],
            f["target"] or "",
            _met(f["met"]),
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def summary(run: Run) -> str:
    targeted = [f for f in run.figures if f["met"] is not None]
    met = sum(1 for f in targeted if f["met"])
    return (
        f"{len(run.figures)} figures; {len(targeted)} with a target: {met} met, "
        f"{len(targeted) - met} not met."
    )


def machine(run: Run) -> list[str]:
    m = run.machine
    if not m:
        return ["- (not recorded)"]
    versions = [f"Python {m.get('python', '?')}", f"SQLite {m.get('sqlite', '?')}"]
    if "PostgreSQL" in run.notes:
        versions.append(f"PostgreSQL {run.notes['PostgreSQL']} (loopback, fsync=off)")
    return [
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores",
        f"- {', '.join(versions)}",
        f"- {m.get('os', '?')}; commit {m.get('commit', '?')}; {m.get('date', '?')}; "
        f"load average {m.get('load_average', '?')} when the run began",
    ]


def hows(run: Run) -> list[str]:
    seen: dict[tuple[str, str], None] = {}
    for f in run.figures:
        if f["how"]:
            seen.setdefault((f["section"], f["how"]), None)
    return [f"- {section}: {how}" for section, how in seen]


def render(run: Run) -> str:
    parts = [
        *table(run),
        "",
        summary(run),
        "",
        "Machine:",
        "",
        *machine(run),
        "",
        "How each figure is measured:",
        "",
        *hows(run),
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the JSON-lines file the benchmarks wrote")
    args = parser.parse_args()
    if not args.results.is_file():
        raise SystemExit(f"{args.results}: no such file; run the benchmarks with BENCH_RESULTS")
    run = load(args.results)
    if not run.figures:
        raise SystemExit(f"{args.results}: no figures in it")
    print(f"\n## Every figure of this run ({args.results})\n")
    print(render(run), end="")


if __name__ == "__main__":
    main()
