"""The README's "Auto-persist" and "asyncio" blocks run as written and print what it shows."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(heading) == 1, f"README has no single {heading!r} heading"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def test_auto_persist_block_prints_what_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = _section("## Auto-persist\n")
    block = section.split("```python", 1)[1].split("```", 1)[0]
    promised = section.split("```text", 1)[1].split("```", 1)[0].strip().splitlines()
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec", dont_inherit=True), {})
    assert out.getvalue().splitlines() == promised
    assert (tmp_path / "orders.db").exists()


def test_asyncio_block_prints_what_the_readme_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = _section("## asyncio\n")
    block = section.split("```python", 1)[1].split("```", 1)[0]
    promised = section.split("```text", 1)[1].split("```", 1)[0].strip().splitlines()
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec", dont_inherit=True), {})
    assert out.getvalue().splitlines() == promised
    assert (tmp_path / "async.db").exists()


def test_the_runtime_sections_sit_after_the_store_api() -> None:
    headings = [
        line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("## ")
    ]
    at = headings.index("## Auto-persist")
    assert headings[at - 1 : at + 4] == [
        "## Store API",
        "## Auto-persist",
        "## Journal and history",
        "## asyncio",
        "## Keys",
    ]
