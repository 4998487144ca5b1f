"""``gotstate_persist.testing.ExtensionTests``: it passes good extensions and fails broken ones.

The examples in ``examples/extensions`` run it on module and entry-point
targets; here it runs on file targets, in both isolations, and on an
extension that breaks the contract in known ways, to show the suite notices.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gotstate_persist as gp
from gotstate_persist.testing import ExtensionTests

SAMPLES = Path(__file__).parent / "ext_samples"
FAST = gp.ResourceLimits(timeout_s=5.0, start_timeout_s=20.0, memory_bytes=None)


class TestFileTargetInWorker(ExtensionTests):
    @pytest.fixture
    def extension_target(self) -> str:
        return f"{SAMPLES / 'throttle.py'}:Throttle"

    @pytest.fixture
    def extension_limits(self) -> gp.ResourceLimits | None:
        return FAST


class TestFileTargetInProcess(ExtensionTests):
    @pytest.fixture
    def extension_target(self) -> str:
        return f"{SAMPLES / 'guarded.py'}:Guarded"

    @pytest.fixture
    def extension_isolation(self) -> str | None:
        return "in-process"


BROKEN = """
from gotstate_persist import EventView


class Broken:
    name = "broken"
    version = "1.0.0"
    category = "event_processing"

    def process(self, event):
        if event.name == "stop":
            return "not an event"
        return event

    def stop(self):
        raise RuntimeError("stop failed")
"""

SUITE = """
import pytest
from gotstate_persist.testing import ExtensionTests


class TestBroken(ExtensionTests):
    @pytest.fixture
    def extension_target(self):
        return {target!r}

    @pytest.fixture
    def extension_isolation(self):
        return "in-process"
"""


# the checks this broken extension passes (and that take a fresh process) are left out
QUICK = "not listing and not pin and not contributions and not second_registration"


def test_the_suite_fails_a_broken_extension(tmp_path: Path) -> None:
    (tmp_path / "broken_ext.py").write_text(BROKEN)
    (tmp_path / "test_broken_suite.py").write_text(
        SUITE.format(target=f"{tmp_path / 'broken_ext.py'}:Broken")
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rf",
            "test_broken_suite.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    failed = sorted(
        line.split("::")[-1].split(" ")[0]
        for line in done.stdout.splitlines()
        if line.startswith("FAILED")
    )
    assert failed == [
        "test_activates_and_deactivates_in_time",  # stop() raised
        "test_deactivate_persists_inactive_with_stats",  # process() returned a str
        "test_reactivation_works",
        "test_sample_calls_return_valid_outputs",
        "test_stats_count_the_calls",
    ], done.stdout[-4000:]
    assert "returned an invalid output from process()" in done.stdout
    assert "stop() raised RuntimeError" in done.stdout
