"""``ExtensionTests``: the conformance suite extension authors subclass.

Subclass it in your tests and name your extension in one fixture::

    class TestMyThrottle(ExtensionTests):
        @pytest.fixture
        def extension_target(self) -> str:
            return "shipping_rules:Throttle"

Optional fixtures, each with a default: ``extension_limits`` and
``extension_isolation`` (passed to ``register``), ``sample_events`` and
``sample_states`` (inputs for ``event_processing`` and ``state_behavior``),
``sample_requests`` and ``sample_candidates`` (for ``configuration``),
``sample_records`` (instances of the record formats a ``persistence``
extension contributes) and ``backend_url_template`` (how to open its backend
schemes).

Every test opens its own store on a SQLite file under ``tmp_path`` with a
generated keyring and talks to the extension through the public API only
(``store.extensions``), exactly as an application would: what passes here
is what the host accepts. Two checks run in a fresh Python process (see
``_extprobe``): that registering and listing import none of the code, and
which backend schemes an activation contributes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ..errors import VersionConflict
from ..extensions import (
    ActiveExtension,
    EventView,
    ExtensionRegistry,
    Registration,
    ResourceLimits,
    StateView,
    TransitionView,
)
from ..formats.extension import CATEGORIES
from ..sealing import KeyRing
from ..store import Store, open_store

__all__ = ["ExtensionTests"]

NAMESPACE = "conformance"
#: ``timeout`` given to ``deactivate``; the contract allows it + 1 s.
DEACTIVATE_TIMEOUT_S = 5.0
#: How much longer than its own bound a lifecycle step may take before it "hung".
GRACE_S = 1.0
#: Bound on a fresh-process probe (imports, a throwaway worker, maybe an activation).
PROBE_TIMEOUT_S = 180.0
PROBE_SCRIPT = Path(__file__).with_name("_extprobe.py")
_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The methods each category may define (besides ``stop``), as the contract lists them.
_METHODS = {
    "event_processing": {"process"},
    "state_behavior": {"on_enter", "on_exit", "allows"},
    "persistence": {"backends", "formats"},
    "configuration": {"load", "validate"},
}
_MAX_EVENT_NAME = 255


def _str_keys(value: object) -> bool:
    return type(value) is dict and all(type(key) is str for key in value)


class ExtensionTests:
    """Conformance tests for one extension; subclass and define ``extension_target``."""

    # Fixtures for the author (override in the subclass).

    @pytest.fixture
    def extension_target(self) -> str:
        pytest.fail(
            "define a fixture extension_target in your ExtensionTests subclass returning the "
            "target to register: 'module:Class', 'path/to/file.py:Class' or an entry-point name"
        )

    @pytest.fixture
    def extension_limits(self) -> ResourceLimits | None:
        """The limits to register with (None: the defaults)."""
        return None

    @pytest.fixture
    def extension_isolation(self) -> str | None:
        """``"worker"`` or ``"in-process"`` (None: the category's default)."""
        return None

    @pytest.fixture
    def sample_events(self) -> list[EventView]:
        """Events an ``event_processing`` extension's ``process`` must handle."""
        return [
            EventView("start"),
            EventView("next", priority=1, metadata={"id": "evt-1", "actor": "conformance"}),
            EventView("stop", metadata={"attempt": 2, "tags": ["a", "b"]}),
        ]

    @pytest.fixture
    def sample_states(self) -> list[StateView]:
        """States a ``state_behavior`` extension is entered into and exited from.

        When the extension declares ``states``, views of other states are
        re-targeted to those (the host calls it only for them).
        """
        return [
            StateView("idle", {}, EventView("start")),
            StateView(
                "busy",
                {"count": 1, "tags": ["a"]},
                EventView("next", 0, {"actor": "conformance"}),
                machine_key="conformance-1",
            ),
        ]

    @pytest.fixture
    def sample_requests(self) -> list[dict[str, Any]]:
        """Arguments for a ``configuration`` extension's ``load``."""
        return [{"name": "payments"}, {"name": "unknown-configuration"}]

    @pytest.fixture
    def sample_candidates(self) -> list[dict[str, Any]]:
        """Arguments for a ``configuration`` extension's ``validate`` (plain values)."""
        return [{}, {"endpoint": "https://example.com", "timeout_s": 2.0}]

    @pytest.fixture
    def sample_records(self) -> list[msgspec.Struct]:
        """Records of the formats a ``persistence`` extension contributes.

        Each contributed kind needs one, unless its newest Struct can be built
        from defaults alone. Older versions are welcome: they are read back
        upcast to the newest.
        """
        return []

    @pytest.fixture
    def backend_url_template(self, tmp_path: Path) -> str:
        """A store URL for each contributed backend scheme (``{scheme}`` is filled in)."""
        return "{scheme}://" + (tmp_path / "contributed" / "{scheme}-store").as_posix()

    # The suite's own fixtures.

    @pytest.fixture
    def extension_store(self, tmp_path: Path) -> Iterator[Store]:
        url = f"sqlite:///{tmp_path / 'extensions.db'}"
        with open_store(url, namespace=NAMESPACE, keyring=KeyRing.generate()) as store:
            yield store

    @pytest.fixture
    def extension_registry(self, extension_store: Store) -> ExtensionRegistry:
        return extension_store.extensions

    @pytest.fixture
    def extension_registration(
        self,
        extension_registry: ExtensionRegistry,
        extension_target: str,
        extension_limits: ResourceLimits | None,
        extension_isolation: str | None,
    ) -> Registration:
        return extension_registry.register(
            extension_target, limits=extension_limits, isolation=extension_isolation
        )

    @pytest.fixture
    def extension_handle(
        self, extension_registry: ExtensionRegistry, extension_registration: Registration
    ) -> Iterator[ActiveExtension]:
        handle = extension_registry.activate(extension_registration.name)
        yield handle
        if handle.active:
            extension_registry.deactivate(extension_registration.name, timeout=0.5)

    # Helpers.

    def _probe(self, tmp_path: Path, request: dict[str, Any]) -> dict[str, Any]:
        """Run ``_extprobe`` in a fresh interpreter; its JSON answer."""
        out = tmp_path / f"probe-{request['mode']}.json"
        request = {
            **request,
            "sys_path": sys.path,
            "url": f"sqlite:///{tmp_path / ('probe-' + request['mode'] + '.db')}",
            "out": str(out),
        }
        done = subprocess.run(  # noqa: S603 - our own interpreter and script
            [sys.executable, str(PROBE_SCRIPT)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0 and out.exists(), (
            f"the fresh-process probe failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
        answer: dict[str, Any] = json.loads(out.read_text())
        return answer

    def _limits_json(self, limits: ResourceLimits | None) -> str | None:
        return None if limits is None else msgspec.json.encode(limits).decode()

    def _state_views(
        self, registration: Registration, sample_states: list[StateView]
    ) -> list[StateView]:
        assert sample_states, "sample_states must not be empty"
        wanted = registration.states
        if not wanted:
            return sample_states
        matching = [view for view in sample_states if view.state in wanted]
        if matching:
            return matching
        return [
            msgspec.structs.replace(view, state=state) for view in sample_states for state in wanted
        ]

    def _sample_calls(
        self, handle: ActiveExtension, samples: dict[str, list[Any]]
    ) -> list[tuple[str, Any, Any]]:
        """Call every method of the interface on its samples: (method, input, output)."""
        outputs = []
        for method in handle.registration.interface:
            for value in samples.get(method, []):
                outputs.append((method, value, handle.call(method, value)))
        return outputs

    def _samples(
        self,
        registration: Registration,
        sample_events: list[EventView],
        sample_states: list[StateView],
        sample_requests: list[dict[str, Any]],
        sample_candidates: list[dict[str, Any]],
    ) -> dict[str, list[Any]]:
        if registration.category == "event_processing":
            assert sample_events, "sample_events must not be empty"
            return {"process": list(sample_events)}
        if registration.category == "state_behavior":
            views = self._state_views(registration, sample_states)
            transitions = [
                TransitionView(view.state, views[(i + 1) % len(views)].state, view.event, view.data)
                for i, view in enumerate(views)
            ]
            return {"on_enter": views, "on_exit": views, "allows": transitions}
        if registration.category == "configuration":
            assert sample_requests and sample_candidates, "sample_requests/_candidates are empty"
            return {"load": list(sample_requests), "validate": list(sample_candidates)}
        return {}  # persistence: backends() and formats() run at activation, not as calls

    @pytest.fixture
    def extension_samples(
        self,
        extension_registration: Registration,
        sample_events: list[EventView],
        sample_states: list[StateView],
        sample_requests: list[dict[str, Any]],
        sample_candidates: list[dict[str, Any]],
    ) -> dict[str, list[Any]]:
        return self._samples(
            extension_registration, sample_events, sample_states, sample_requests, sample_candidates
        )

    # The tests.

    def test_registers_cleanly(
        self, extension_registry: ExtensionRegistry, extension_registration: Registration
    ) -> None:
        reg = extension_registration
        assert _NAME.fullmatch(reg.name), f"name {reg.name!r}: 1-64 of a-z, 0-9, '_', '-'"
        assert _VERSION.fullmatch(reg.version), f"version {reg.version!r}: MAJOR.MINOR.PATCH"
        assert reg.category in CATEGORIES
        assert reg.interface, "the registration lists no methods"
        assert set(reg.interface) <= _METHODS[reg.category] | {"stop"}
        assert set(reg.interface) & _METHODS[reg.category]
        assert (reg.status, reg.reason, reg.revision) == ("registered", "registered", 1)
        assert _SHA256.fullmatch(reg.code_sha256)
        assert reg.files and all(_SHA256.fullmatch(digest) for digest in reg.files.values())
        assert extension_registry.get(reg.name) == reg
        assert [r.name for r in extension_registry.list()] == [reg.name]
        assert extension_registry.verify()[reg.name].clean

    def test_pin_is_stable(
        self,
        tmp_path: Path,
        extension_registration: Registration,
        extension_target: str,
        extension_limits: ResourceLimits | None,
        extension_isolation: str | None,
    ) -> None:
        url = f"sqlite:///{tmp_path / 'second.db'}"
        with open_store(url, namespace=NAMESPACE, keyring=KeyRing.generate()) as other:
            again = other.extensions.register(
                extension_target, limits=extension_limits, isolation=extension_isolation
            )
        assert again.code_sha256 == extension_registration.code_sha256
        assert again.files == extension_registration.files

    def test_listing_imports_no_extension_code(
        self,
        tmp_path: Path,
        extension_registration: Registration,
        extension_target: str,
        extension_limits: ResourceLimits | None,
        extension_isolation: str | None,
    ) -> None:
        answer = self._probe(
            tmp_path,
            {
                "mode": "listing",
                "target": extension_target,
                "limits": self._limits_json(extension_limits),
                "isolation": extension_isolation,
            },
        )
        assert answer["name"] == extension_registration.name
        location = extension_registration.location
        pinned = {
            str((Path(location.root) / rel).resolve()) for rel in extension_registration.files
        }
        imported = sorted(set(answer["new_files"]) & pinned)
        assert not imported, f"registering or listing imported the extension's code: {imported}"
        names = [location.module] if location.kind == "module" else []
        assert not [name for name in answer["new_modules"] if name in names]

    def test_activates_and_deactivates_in_time(
        self, extension_registry: ExtensionRegistry, extension_registration: Registration
    ) -> None:
        name = extension_registration.name
        started = time.monotonic()
        handle = extension_registry.activate(name)
        assert time.monotonic() - started < extension_registration.limits.start_timeout_s + GRACE_S
        assert handle.active and extension_registry.get(name).status == "active"
        started = time.monotonic()
        reg = extension_registry.deactivate(name, timeout=DEACTIVATE_TIMEOUT_S)
        assert time.monotonic() - started < DEACTIVATE_TIMEOUT_S + GRACE_S
        assert reg.status == "inactive" and not handle.active
        assert reg.reason == "deactivated", f"deactivation was not clean: {reg.reason}"

    def test_sample_calls_return_valid_outputs(
        self, extension_handle: ActiveExtension, extension_samples: dict[str, list[Any]]
    ) -> None:
        reg = extension_handle.registration
        for method, value, output in self._sample_calls(extension_handle, extension_samples):
            where = f"{method}({value!r})"
            if method == "process":
                assert type(output) is list, where
                assert len(output) <= reg.limits.max_events, where
                for event in output:
                    assert type(event) is EventView, where
                    assert 1 <= len(event.name) <= _MAX_EVENT_NAME, where
                    assert _str_keys(event.metadata), where
            elif method in ("on_enter", "on_exit", "load"):
                assert _str_keys(output), where
            elif method == "allows":
                assert type(output) is bool, where
            elif method == "validate":
                assert type(output) is list and all(type(p) is str for p in output), where
        assert extension_handle.stats().failures == 0

    def test_contributions_are_usable(
        self,
        tmp_path: Path,
        extension_store: Store,
        extension_registration: Registration,
        sample_records: list[msgspec.Struct],
        backend_url_template: str,
        extension_target: str,
        extension_limits: ResourceLimits | None,
        extension_isolation: str | None,
    ) -> None:
        """Persistence only: contributed formats round-trip, contributed schemes open stores."""
        if extension_registration.category != "persistence":
            pytest.skip("only persistence extensions contribute backends and formats")
        formats = extension_store.formats
        before = set(formats.kinds())
        extension_store.extensions.activate(extension_registration.name)
        added = sorted(set(formats.kinds()) - before)
        if "formats" in extension_registration.interface:
            assert added, "formats() contributed no record format"
        for kind in added:
            newest = formats.type_for(kind, formats.newest_version(kind))
            records = [r for r in sample_records if formats.kind_of(r)[0] == kind]
            if not records:
                try:
                    records = [newest()]
                except TypeError:
                    pytest.fail(f"add a record of kind {kind!r} to the sample_records fixture")
            for i, record in enumerate(records):
                key = f"conformance-{kind}-{i}"
                extension_store.save(key, record)
                loaded = extension_store.load(key)
                assert type(loaded) is newest
                if type(record) is newest:
                    assert loaded == record
        if "backends" in extension_registration.interface:
            answer = self._probe(
                tmp_path,
                {
                    "mode": "schemes",
                    "target": extension_target,
                    "limits": self._limits_json(extension_limits),
                    "isolation": extension_isolation,
                    "url_template": backend_url_template,
                },
            )
            assert answer["schemes"], "backends() contributed no scheme"
            assert answer["usable"] == dict.fromkeys(answer["schemes"], True)

    def test_stats_count_the_calls(
        self, extension_handle: ActiveExtension, extension_samples: dict[str, list[Any]]
    ) -> None:
        calls = len(self._sample_calls(extension_handle, extension_samples))
        calls += len(self._sample_calls(extension_handle, extension_samples))
        stats = extension_handle.stats()
        assert (stats.calls, stats.ok, stats.failures) == (calls, calls, 0)
        assert (stats.timeouts, stats.crashes) == (0, 0)
        if calls:
            assert stats.p50_ms is not None and stats.p99_ms is not None

    def test_deactivate_persists_inactive_with_stats(
        self,
        extension_registry: ExtensionRegistry,
        extension_handle: ActiveExtension,
        extension_samples: dict[str, list[Any]],
    ) -> None:
        name = extension_handle.name
        calls = len(self._sample_calls(extension_handle, extension_samples))
        reg = extension_registry.deactivate(name, timeout=DEACTIVATE_TIMEOUT_S)
        assert reg.status == "inactive" and reg.stats is not None
        assert (reg.stats.calls, reg.stats.ok) == (calls, calls)
        assert extension_registry.get(name) == reg
        statuses = [r.status for r in extension_registry.history(name)]
        assert statuses == ["registered", "active", "inactive"]

    def test_reactivation_works(
        self,
        extension_registry: ExtensionRegistry,
        extension_registration: Registration,
        extension_samples: dict[str, list[Any]],
    ) -> None:
        name = extension_registration.name
        extension_registry.activate(name)
        extension_registry.deactivate(name, timeout=DEACTIVATE_TIMEOUT_S)
        handle = extension_registry.activate(name)
        assert handle.active and extension_registry.get(name).status == "active"
        calls = len(self._sample_calls(handle, extension_samples))
        assert handle.stats().ok == calls
        assert [r.revision for r in extension_registry.history(name)] == [1, 2, 3, 4]

    def test_second_registration_without_expected_version_conflicts(
        self,
        extension_store: Store,
        extension_registration: Registration,
        extension_target: str,
        extension_limits: ResourceLimits | None,
        extension_isolation: str | None,
    ) -> None:
        exts = extension_store.extensions
        before = extension_store.usage()
        with pytest.raises(VersionConflict, match="revision 1, not 0"):
            exts.register(extension_target, limits=extension_limits, isolation=extension_isolation)
        assert extension_store.usage() == before
        assert exts.history(extension_registration.name) == [extension_registration]
