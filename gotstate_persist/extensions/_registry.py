"""``gp.ExtensionRegistry``: the extensions of one namespace, and their lifecycle.

A registration is a sealed record of the namespace under a reserved system
key (``_names.system_key("ext", name)``): every change is one compare-and-set
append through the store's :class:`~gotstate_persist._pipeline.RecordPipeline`,
so history, upcasting, quotas and every backend come with it, and a refused
change writes nothing. What is *not* persisted is per process: the running
workers or threads of each activated extension (``ActiveExtension``), owned
by this registry and stopped when the store closes.

Listing, reading and history decode records only: they import no extension
code. Code runs only on activation, from the pinned location of an
authenticated registration whose files still hash to the pin.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._names import system_area_prefix, system_key
from .._pipeline import RecordPipeline
from ..config._commit import ConfigLog
from ..config._definitions import ConfigRef
from ..errors import (
    ExtensionCodeChanged,
    ExtensionUnavailable,
    InvalidArgument,
    NotFound,
    PersistError,
    VersionConflict,
)
from ..formats.extension import ExtensionStats, RegistrationRecord, ResourceLimits
from ._active import ActiveExtension, Runner
from ._bound import BoundMachine
from ._contrib import contribute
from ._guard import GuardedRunner
from ._pin import Drift, check_unchanged, compare, pin
from ._protocol import WorkerConfig
from ._register import prepare_registration
from ._registration import Registration, registration_of
from ._settings import activation_settings, store_settings
from ._workerpool import WorkerPool

__all__ = ["EXTENSION_AREA", "ExtensionRegistry"]

logger = logging.getLogger(__name__)

#: The system-key area holding registrations (``\x1fgotstate/ext/<name>``).
EXTENSION_AREA = "ext"
#: How often a status change re-reads after losing a race to another process.
_STATUS_ATTEMPTS = 8
_DEFAULT_STOP_TIMEOUT = 5.0


class ExtensionRegistry:
    """Register, activate, bind and retire the extensions of one namespace.

    Get it as ``store.extensions``. ``max_limits`` caps what a registration
    may ask for; ``worker_prefix`` runs every worker inside an operator's
    sandbox command (e.g. ``["bwrap", ...]``). Thread-safe.
    """

    def __init__(
        self,
        pipeline: RecordPipeline,
        *,
        max_limits: ResourceLimits | None = None,
        worker_prefix: Sequence[str] = (),
    ) -> None:
        self._pipeline = pipeline
        # extensions' settings are configurations (``extension/<name>``) of this namespace
        self._settings_log = ConfigLog(pipeline)
        self._lock = threading.Lock()
        self._active: dict[str, ActiveExtension] = {}
        # why each extension stopped here (a circuit's reason), for ExtensionUnavailable
        self._stopped: dict[str, str] = {}
        # backend schemes each persistence extension registered in this process
        self._schemes: dict[str, set[str]] = {}
        self._max_limits: ResourceLimits | None = None
        self._worker_prefix: tuple[str, ...] = ()
        self.set_policy(max_limits=max_limits, worker_prefix=worker_prefix)

    def set_policy(
        self, *, max_limits: ResourceLimits | None = None, worker_prefix: Sequence[str] = ()
    ) -> None:
        """Set this process's host policy: the cap on limits, and the worker sandbox prefix.

        The policy is the host's, not the store's: it is not persisted, and
        every process sets its own (registrations made under a tighter cap
        keep the limits they were given).
        """
        if max_limits is not None and not isinstance(max_limits, ResourceLimits):
            raise InvalidArgument("max_limits must be a gotstate_persist.ResourceLimits or None")
        if isinstance(worker_prefix, str) or not all(isinstance(p, str) for p in worker_prefix):
            raise InvalidArgument("worker_prefix must be a list of str (a command and arguments)")
        self._max_limits = max_limits
        self._worker_prefix = tuple(worker_prefix)

    @property
    def max_limits(self) -> ResourceLimits | None:
        """The most a registration may ask for (None: no cap beyond the defaults)."""
        return self._max_limits

    @property
    def worker_prefix(self) -> tuple[str, ...]:
        """The operator's sandbox command every worker starts inside (empty: none)."""
        return self._worker_prefix

    def __repr__(self) -> str:
        return f"<ExtensionRegistry namespace={self._pipeline.namespace!r}>"

    # Reading (no extension code is imported).

    def _key(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise InvalidArgument("an extension name must be a non-empty str")
        return system_key(EXTENSION_AREA, name)

    def _not_found(self, name: str) -> NotFound:
        return NotFound(
            f"no extension named {name!r} is registered in namespace "
            f"{self._pipeline.namespace!r}; see 'gotstate-persist ext ls' or register it"
        )

    def _find(self, name: str) -> Registration | None:
        try:
            info, record = self._pipeline.load(self._key(name))
        except NotFound:
            return None
        return registration_of(_as_record(record), info.version)

    def get(self, name: str) -> Registration:
        """The newest revision of ``name`` (``NotFound`` if it was never registered)."""
        found = self._find(name)
        if found is None:
            raise self._not_found(name)
        return found

    def history(self, name: str) -> list[Registration]:
        """Every revision of ``name``, oldest first (one per change)."""
        key = self._key(name)
        pipeline = self._pipeline
        revisions = []
        for info in pipeline.backend.versions(pipeline.namespace, key):
            _, record = pipeline.load(key, info.version)
            revisions.append(registration_of(_as_record(record), info.version))
        if not revisions:
            raise self._not_found(name)
        return revisions

    def verify(self) -> dict[str, Drift]:
        """Re-hash every registration's files: name -> what differs from its pin."""
        return {reg.name: compare(reg.files, _current_files(reg)) for reg in self.list()}

    # Changing registrations (one store write each; nothing on refusal).

    def register(
        self,
        target: str,
        *,
        limits: ResourceLimits | None = None,
        isolation: str | None = None,
        expected_version: int = 0,
        allow_major: bool = False,
        secrets: Sequence[str] = (),
    ) -> Registration:
        """Register the extension class ``target`` names (revision 1 for a new name).

        ``target`` is ``"module:Class"``, ``"path/to/file.py:Class"``,
        ``"path/to/pkgdir:Class"`` or an entry-point name in group
        ``gotstate_persist.extensions``. The class is checked in a throwaway
        worker process, never imported here. Re-registering a name (an
        upgrade, or after ``unregister``) passes its current revision as
        ``expected_version``. ``secrets`` names the fields of the class's
        ``Settings`` typed ``gp.Secret`` that the extension receives in clear
        (every other secret field reaches it as ``""``).
        """
        record = prepare_registration(
            target,
            limits=limits,
            isolation=isolation,
            max_limits=self.max_limits,
            prefix=self.worker_prefix,
            existing=self._find,
            allow_major=allow_major,
            now=self._pipeline.clock(),
            secrets=secrets,
        )
        return self._append(record, expected_version)

    def configure(
        self, name: str, settings: object, *, expected_version: int, reason: str = ""
    ) -> ConfigRef:
        """Store ``name``'s own settings (configuration ``extension/<name>``), validated.

        ``settings`` is a mapping of the class's ``Settings`` fields (or an
        instance of it), checked against ``Settings`` in a throwaway worker;
        ``ConfigInvalid`` lists every problem and nothing is written.
        ``expected_version`` is the settings' current version (0: none yet).
        The extension receives them at its next activation.
        """
        return store_settings(
            self._pipeline,
            self._settings_log,
            self.get(name),
            settings,
            expected_version=expected_version,
            prefix=self.worker_prefix,
            reason=reason,
        )

    def _append(self, record: RegistrationRecord, expected_version: int) -> Registration:
        try:
            info = self._pipeline.append(
                self._key(record.name), record, expected_version=expected_version
            )
        except VersionConflict as exc:
            actual = exc.actual
            raise VersionConflict(
                f"extension {record.name!r} is at revision {actual}, not {expected_version}; "
                f"nothing was written. Read it with exts.get({record.name!r}) and pass its "
                "revision as expected_version",
                expected=expected_version,
                actual=actual,
            ) from None
        return registration_of(record, info.version)

    def _set_status(
        self,
        name: str,
        status: str,
        reason: str,
        *,
        expected_version: int | None = None,
        stats: ExtensionStats | None = None,
        unless: Callable[[Registration], bool] = lambda reg: False,
    ) -> Registration:
        """Persist a status change, re-reading after a lost race unless the caller pinned it."""
        for _ in range(_STATUS_ATTEMPTS):
            current = self.get(name)
            if expected_version is not None and current.revision != expected_version:
                raise VersionConflict(
                    f"extension {name!r} is at revision {current.revision}, not "
                    f"{expected_version}; nothing was written",
                    expected=expected_version,
                    actual=current.revision,
                )
            if unless(current):
                return current
            record = current.record(
                status=status,
                reason=reason,
                changed_at=self._pipeline.clock(),
                stats=stats if stats is not None else current.stats,
            )
            try:
                return self._append(record, current.revision)
            except VersionConflict:
                if expected_version is not None:
                    raise
        raise VersionConflict(
            f"extension {name!r} changed {_STATUS_ATTEMPTS} times while its status was being "
            "set; retry"
        )

    def unregister(
        self, name: str, *, expected_version: int | None = None, timeout: float = 5.0
    ) -> Registration:
        """Deactivate ``name`` here and mark it unregistered (history stays readable)."""
        current = self.get(name)
        _check_expected(name, current, expected_version)
        stats = self._stop_local(name, timeout)[1]
        return self._set_status(
            name,
            "unregistered",
            "unregistered",
            expected_version=current.revision,
            stats=stats,
            unless=lambda reg: reg.status == "unregistered",
        )

    # Lifecycle.

    def activate(self, name: str, *, expected_version: int | None = None) -> ActiveExtension:
        """Start ``name`` in this process and persist status ``active`` (if not already)."""
        current = self.get(name)
        _check_expected(name, current, expected_version)
        if current.status == "unregistered":
            raise ExtensionUnavailable(
                f"extension {name!r} was unregistered; register it again to use it"
            )
        with self._lock:
            handle = self._active.get(name)
        if (
            handle is not None
            and handle.active
            and handle.registration.code_sha256 == (current.code_sha256)
        ):
            if current.status != "active":
                self._set_status(name, "active", "activated", unless=_is_active)
            return handle
        try:
            check_unchanged(name, current.files, current.location)
        except ExtensionCodeChanged as exc:
            self._record_failure(name, f"code changed since registration: {exc}")
            raise
        runner = self._runner(current)
        try:
            runner.start()
            if current.category == "persistence" and isinstance(runner, GuardedRunner):
                contribute(
                    name,
                    runner.call_direct,
                    current.interface,
                    self._pipeline.formats,
                    owned_schemes=self._schemes.setdefault(name, set()),
                    code_sha256=current.code_sha256,
                )
        except PersistError as exc:
            runner.kill()
            self._record_failure(name, f"could not start: {type(exc).__name__}: {exc}")
            raise
        try:
            stored = self._set_status(name, "active", "activated", unless=_is_active)
        except BaseException:
            runner.kill()
            raise
        handle = ActiveExtension(
            stored, runner, on_circuit_open=self._circuit_opened, metrics=self._pipeline.metrics
        )
        if isinstance(runner, GuardedRunner):
            runner.on_stuck = handle.stuck
        with self._lock:
            previous = self._active.get(name)
            self._active[name] = handle
            self._stopped.pop(name, None)
        if previous is not None:
            previous.close(0.0)
        return handle

    def _runner(self, registration: Registration) -> Runner:
        settings = activation_settings(self._settings_log, registration)
        if registration.isolation == "worker":
            return WorkerPool(
                WorkerConfig(
                    name=registration.name,
                    location=registration.location,
                    files=registration.files,
                    limits=registration.limits,
                    prefix=self.worker_prefix,
                    settings=settings,
                )
            )
        return GuardedRunner(
            registration.name,
            registration.location,
            registration.limits,
            files=registration.files,
            settings=settings,
        )

    def handle(self, name: str) -> ActiveExtension:
        """The active handle of ``name`` in this process (``ExtensionUnavailable`` if none)."""
        with self._lock:
            handle = self._active.get(name)
        if handle is None or not handle.active:
            why = self._stopped.get(name, "")
            raise ExtensionUnavailable(
                f"extension {name!r} is not active in this process"
                + (f" ({why})" if why else "")
                + f"; call exts.activate({name!r})"
            )
        return handle

    def deactivate(
        self,
        name: str,
        *,
        timeout: float = _DEFAULT_STOP_TIMEOUT,
        expected_version: int | None = None,
    ) -> Registration:
        """Drain and stop ``name`` here within ``timeout`` (+1 s); persist ``inactive``.

        The final stats of this process are persisted with the status.
        """
        if type(timeout) not in (int, float) or not timeout >= 0:
            raise InvalidArgument("timeout must be a number of seconds >= 0")
        current = self.get(name)
        _check_expected(name, current, expected_version)
        note, stats = self._stop_local(name, timeout)
        if current.status in ("inactive", "unregistered") and stats is None:
            return current
        reason = "deactivated" + (f"; {note}" if note else "")
        return self._set_status(
            name, "inactive", reason, stats=stats, unless=lambda reg: reg.status == "unregistered"
        )

    def _stop_local(self, name: str, timeout: float) -> tuple[str, ExtensionStats | None]:
        with self._lock:
            handle = self._active.pop(name, None)
            if handle is not None:
                self._stopped[name] = "it was deactivated"
        if handle is None:
            return "", None
        note = handle.close(timeout)
        return note, handle.stats()

    def _circuit_opened(self, handle: ActiveExtension, reason: str) -> None:
        with self._lock:
            if self._active.get(handle.name) is handle:
                del self._active[handle.name]
                self._stopped[handle.name] = reason
        self._record_failure(handle.name, reason, stats=handle.stats())

    def _record_failure(
        self, name: str, reason: str, *, stats: ExtensionStats | None = None
    ) -> None:
        """Persist ``failed``; a storage error here is logged, never hides the original one."""
        try:
            self._set_status(name, "failed", reason, stats=stats)
        except PersistError as exc:
            logger.warning(
                "extension %r: could not persist status failed (%s)", name, type(exc).__name__
            )

    # Machines.

    def bind(self, machine: Any, *names: str, key: str = "") -> BoundMachine:
        """Bind active extensions to ``machine``: processors in the given order, then behaviors."""
        handles = []
        for name in names:
            handle = self.handle(name)
            if handle.registration.category not in ("event_processing", "state_behavior"):
                raise InvalidArgument(
                    f"extension {name!r} is a {handle.registration.category} extension; only "
                    "event_processing and state_behavior extensions bind to machines"
                )
            handles.append(handle)
        return BoundMachine(machine, handles, key=key, resolve=self.handle)

    def close(self) -> None:
        """Stop every extension this process runs, persisting nothing (statuses stay)."""
        with self._lock:
            handles = list(self._active.values())
            self._active.clear()
        for handle in handles:
            handle.close(0.0)

    def list(self, *, include_unregistered: bool = False) -> list[Registration]:
        """The newest revision of every registered name, sorted by name.

        (Defined last in the class: the name ``list`` would otherwise shadow
        the builtin in the annotations below it.)
        """
        prefix = system_area_prefix(EXTENSION_AREA)
        backend = self._pipeline.backend
        found = []
        for key in backend.keys(self._pipeline.namespace, prefix):
            if not key.startswith(prefix):
                continue
            try:
                info, record = self._pipeline.load(key)
            except NotFound:  # unregistered and deleted between listing and reading
                continue
            registration = registration_of(_as_record(record), info.version)
            if include_unregistered or registration.status != "unregistered":
                found.append(registration)
        return sorted(found, key=lambda r: r.name)


def _is_active(registration: Registration) -> bool:
    return registration.status == "active"


def _as_record(record: object) -> RegistrationRecord:
    if not isinstance(record, RegistrationRecord):
        raise InvalidArgument("the stored registration has an unexpected format")
    return record


def _check_expected(name: str, current: Registration, expected_version: int | None) -> None:
    if expected_version is not None and current.revision != expected_version:
        raise VersionConflict(
            f"extension {name!r} is at revision {current.revision}, not {expected_version}; "
            "nothing was written",
            expected=expected_version,
            actual=current.revision,
        )


def _current_files(registration: Registration) -> dict[str, str]:
    try:
        return pin(registration.location)
    except PersistError:  # the code is gone altogether: every pinned file was removed
        return {}
