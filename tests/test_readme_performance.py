"""The README's "Performance" section is what ``make bench`` printed; every benchmark feeds it.

No benchmark runs here and nothing is timed: the figures come from one recorded
run (``benchmarks/results.jsonl``, the file that run's benchmarks wrote), and
the README must show exactly what ``benchmarks/report_table.py`` prints for it,
so the two cannot drift apart. The reporting itself (``benchmarks/_report.py``)
is checked on its behaviour: it prints what the benchmark printed before and
appends one JSON line per figure only when a results file is asked for.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
README = ROOT / "README.md"
RECORDED = BENCHMARKS / "results.jsonl"

sys.path.insert(0, str(BENCHMARKS))

import _report  # noqa: E402
import report_table  # noqa: E402


def _section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(heading) == 1, f"README has no single {heading!r} heading"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _make_bench_scripts() -> list[str]:
    """The benchmark scripts the Makefile's ``bench`` target runs, in order."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\nbench: $(STAMP)\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"benchmarks/(bench_\w+)\.py", recipe)


def test_readme_shows_what_report_table_prints_for_the_recorded_run() -> None:
    run = report_table.load(RECORDED)
    assert run.figures, "benchmarks/results.jsonl holds no figures"
    section = _section("## Performance\n")
    assert report_table.render(run) in section, (
        "the README's Performance section is not report_table.py's output for "
        "benchmarks/results.jsonl: after a new `make bench`, copy its results file there "
        "and paste the printed table into the README"
    )


def test_every_benchmark_make_bench_runs_reports_figures() -> None:
    scripts = _make_bench_scripts()
    assert len(scripts) >= 10, scripts
    for script in scripts:
        source = (BENCHMARKS / f"{script}.py").read_text(encoding="utf-8")
        assert "from _report import" in source, f"{script}.py does not report through _report"
    recorded = {figure["bench"] for figure in report_table.load(RECORDED).figures}
    assert recorded == set(scripts), "the recorded run lacks (or has extra) benchmarks"


def test_every_recorded_figure_is_unique_and_complete() -> None:
    run = report_table.load(RECORDED)
    names = [(f["section"], f["figure"]) for f in run.figures]
    assert len(names) == len(set(names)), "two figures of one section share a name"
    for f in run.figures:
        assert f["how"], f"{f['section']}: {f['figure']} does not say how it is measured"
        assert (f["target"] is None) == (f["met"] is None), f
    for field in ("cpu", "cores", "python", "sqlite"):
        assert run.machine.get(field), f"the recorded run does not name the machine's {field}"


def test_a_figure_prints_its_line_and_records_nothing_without_a_results_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(_report.RESULTS_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    assert _report.results_path() is None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        met = _report.figure("s", "f", 0.5, "x speed", at_least=0.8, line="the bench's line")
    assert out.getvalue() == "the bench's line\n"
    assert met is False
    assert list(tmp_path.iterdir()) == []


def test_a_figure_is_one_json_line_with_the_machine_once_per_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    results = tmp_path / "nested" / "results.jsonl"
    monkeypatch.setenv(_report.RESULTS_VARIABLE, str(results))
    monkeypatch.setattr(_report, "_MACHINE_WRITTEN", set())
    with contextlib.redirect_stdout(io.StringIO()):
        _report.figure("quota", "(b)", 0.95, "x speed", at_least=0.9, detail="d", how="h")
        _report.figure("undo", "capture", 2413.0, "us", how="h2")
        _report.note("PostgreSQL", "15.18")
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [next(iter(r)) for r in records] == ["machine", "bench", "bench", "note"]
    assert records[1] | {"bench": "-"} == {
        "bench": "-",
        "section": "quota",
        "figure": "(b)",
        "value": 0.95,
        "unit": "x speed",
        "detail": "d",
        "target": ">= 0.90x speed",
        "met": True,
        "how": "h",
    }
    assert records[2]["target"] is None and records[2]["met"] is None
    run = report_table.load(results)
    assert run.notes == {"PostgreSQL": "15.18"}
    text = report_table.render(run)
    assert "| quota | (b) | 0.95x speed | d | >= 0.90x speed | yes |" in text
    assert "| undo | capture | 2,413 us |  |  |  |" in text
    assert "PostgreSQL 15.18" in text
    assert "2 figures; 1 with a target: 1 met, 0 not met." in text


def test_a_bound_below_or_above_decides_met() -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert _report.figure("s", "f", 1.2, "x time", at_most=1.0) is False
        assert _report.figure("s", "f", 39, "B", at_most=39) is True
        assert _report.figure("s", "f", 20_001.0, "records/s", at_least=20_000) is True
    assert _report.format_value(0.0048, "x time") == "0.0048x time"
    assert _report.format_value(12_345.6, "ops/s") == "12,346 ops/s"
