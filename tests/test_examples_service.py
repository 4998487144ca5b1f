"""``examples/service/service.py`` serves orders whose machines persist themselves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gotstate_persist as gp

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "examples" / "service" / "service.py"
#: Generous bound for "did not hang": the run takes about a second.
RUN_TIMEOUT_S = 120


def _demo(tmp_path: Path, directory: Path) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(SERVICE), "--demo", "--dir", str(directory)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_demo_survives_a_restart_and_journals_every_accepted_request(tmp_path: Path) -> None:
    directory = tmp_path / "orders"
    lines = _demo(tmp_path, directory)
    assert "'accepted': False" in lines[2]  # "refund" is not a transition of the order
    assert lines[4] == "-- service restarted --"
    # after the restart the order continued from where the first process left it
    assert "'state': 'packed'" in lines[5]
    journal = [line for line in lines if line.startswith("journal ")]
    assert journal == [
        "journal 1: start     idle -> cart  by web",
        "journal 2: checkout  cart -> payment  by web",
        "journal 3: pay       payment -> picking  by payments",
        "journal 4: pack      picking -> packed  by warehouse",
    ]
    # what the service stored is what a fresh machine recovers to
    keys = gp.KeyRing.load((directory / "keys.json").read_text())
    sys.path.insert(0, str(ROOT / "examples"))
    from order_workflow import build_order_machine

    with gp.open_store(f"sqlite:///{directory / 'orders.db'}", keyring=keys) as store:
        assert store.keys() == ["order/42"]
        machine = build_order_machine()
        head = store.recover("order/42", machine)
        assert machine.current_state.name == "packed"
        assert head.journal_seq == 4
        # detach on shutdown left a snapshot covering the whole journal
        assert store.load("order/42").journal_seq == 4


def test_a_second_run_continues_the_same_order(tmp_path: Path) -> None:
    directory = tmp_path / "orders"
    _demo(tmp_path, directory)
    again = _demo(tmp_path, directory)
    # the order is already packed: the script's events are refused, none journaled
    assert all("'accepted': False" in line for line in again[:4])
    assert sum(line.startswith("journal ") for line in again) == 4
