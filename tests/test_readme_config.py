"""The README's "Configuration" section: its first code block runs as written.

The block's printed output is the documentation's promise, so it is compared
line by line; the secrets the block uses must never be printed.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
#: The secrets the block stores: never shown, whatever it prints.
SECRETS = ("t0k-1", "t0k-2")
EXPECTED = [
    "1 Payments(endpoint='https://pay.example', timeout_s=2.0, retries=3, "
    "api_token=Secret('**********'))",
    "('$.endpoint: must use https', '$.timeout_s: expected a number >= 0.1 and <= 30')",
    "[(1, 'initial'), (2, 'rotate token, slower provider')]",
    "[ConfigChange(path='$.api_token', old='**********', new='**********'), "
    "ConfigChange(path='$.timeout_s', old=2.0, new=5.0)]",
    "[('payments', 3), ('shipping', 2)]",
    "Shipping(carrier='ups', max_parcels=20)",
    "4",
    "7",
    "$.endpoint https://pay.example store version 4 ()",
    "$.timeout_s 4.0 payments.toml:2 ('default', 'store version 4')",
    "$.retries 7 environment PAY_RETRIES ('default', 'store version 4', 'payments.toml:3')",
    "$.api_token ********** store version 4 ('default',)",
    "5 4",
    "[4, 5]",
    "[]",
]


def _first_block(after: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert text.count(after) == 1, f"README has no single {after!r} heading"
    return text.split(after, 1)[1].split("```python", 1)[1].split("```", 1)[0]


def test_the_configuration_section_follows_extensions() -> None:
    headings = [
        line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("## ")
    ]
    at = headings.index("## Configuration")
    assert headings[at - 1 : at + 2] == ["## Extensions", "## Configuration", "## Command line"]


def test_readme_configuration_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = _first_block("## Configuration\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PAY_RETRIES", "unset-after-the-test")  # the block sets it; restored
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        # dont_inherit: this module's "from __future__ import annotations" must not apply
        exec(compile(block, "README.md", "exec", dont_inherit=True), {})
    printed = out.getvalue()
    assert printed.splitlines() == EXPECTED
    assert (tmp_path / "config.db").exists()
    assert (tmp_path / "payments.toml").exists()
    for secret in SECRETS:
        assert secret in block  # the canaries are really used
        assert secret not in printed
