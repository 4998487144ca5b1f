"""``examples/config/app.py`` runs as documented, writes only where it is told, leaks no secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "config" / "app.py"
TOML = ROOT / "examples" / "config" / "payments.toml"
CANARY = "canary-4b1d9e-api-token"
#: Generous bound for "did not hang": the run takes about a second.
RUN_TIMEOUT_S = 120


def _run(tmp_path: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **{
            name: value for name, value in os.environ.items() if not name.upper().startswith("PAY_")
        },
        "PYTHONPATH": str(ROOT),
        "PAY_API_TOKEN": CANARY,
        "PAY_RETRIES": "4",
        "TMPDIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, str(APP), "--dir", str(directory), "--toml", str(TOML)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_the_config_example_runs_and_never_shows_the_token(tmp_path: Path) -> None:
    shipped = sorted(path.name for path in APP.parent.iterdir())
    directory = tmp_path / "shop"
    done = _run(tmp_path, directory)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"  $.timeout_s = 4.0 from {TOML}:3 (overrode default, store version 1)" in lines
    assert (
        "  $.retries = 4 from environment PAY_RETRIES (overrode default, store version 1, "
        + (f"{TOML}:4)")
        in lines
    )
    assert (
        "  $.api_token = '**********' from environment PAY_API_TOKEN "
        "(overrode default, store version 1)"
    ) in lines
    assert "  $.endpoint = 'https://pay.example' from store version 1" in lines
    assert (
        "refused, nothing written: $.endpoint: must use https; "
        "$.retries: expected a number >= 0 and <= 10"
    ) in lines
    assert "committed together: payments v2, shipping v2" in lines
    assert "live: version 3, timeout_s 4.0 -> 5.0" in lines
    assert lines[-1] == "payments history: v1 baseline, v2 deploy, v3 provider is slow"
    assert CANARY not in done.stdout
    assert CANARY not in done.stderr
    # it wrote only where it was told (and not beside itself)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shop"]
    assert sorted(path.name for path in directory.iterdir()) == ["config.db", "keys.json"]
    assert sorted(path.name for path in APP.parent.iterdir()) == shipped
    # the store holds the token sealed (encrypted), never in clear
    assert CANARY.encode() not in (directory / "config.db").read_bytes()


def test_a_second_run_continues_from_the_stored_versions(tmp_path: Path) -> None:
    directory = tmp_path / "shop"
    assert _run(tmp_path, directory).returncode == 0
    again = _run(tmp_path, directory)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert "committed together: payments v4, shipping v3" in lines
    assert lines[-1] == (
        "payments history: v1 baseline, v2 deploy, v3 provider is slow, v4 deploy, "
        "v5 provider is slow"
    )
    assert CANARY not in again.stdout + again.stderr
