"""Turning a target string into a checked registration record, importing nothing here.

The steps of the contract, in order: locate the target without importing
it, pin its code (sha256 of every file, recomputed from disk), let a
throwaway worker import it and report the class, then check everything
(declarations, category interface, isolation, limits against the policy,
upgrade rules, secret grants against the class's ``Settings``) and report
every problem in one ``ExtensionInvalid``. The result is a record ready for
one store write; nothing is written here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import msgspec

from .._version import VERSION
from ..errors import ExtensionInvalid
from ..formats.extension import (
    ISOLATIONS,
    RegistrationRecord,
    ResourceLimits,
    limit_problems,
)
from ._categories import Requirements, interface_problems
from ._pin import code_sha256, pin
from ._protocol import SettingsInfo, WorkerConfig
from ._registration import Registration
from ._target import locate
from ._workerproc import inspect_target

__all__ = ["DEFAULT_ISOLATION", "prepare_registration"]

#: Where each category runs unless the registration says otherwise.
DEFAULT_ISOLATION = {
    "event_processing": "worker",
    "state_behavior": "worker",
    "persistence": "in-process",
    "configuration": "in-process",
}


def _capped(
    limits: ResourceLimits | None, max_limits: ResourceLimits | None, problems: list[str]
) -> ResourceLimits:
    """The limits to persist: asked-for values above the policy are refused, defaults capped."""
    chosen = limits if limits is not None else ResourceLimits()
    if max_limits is None:
        return chosen
    defaults = ResourceLimits()
    changes: dict[str, object] = {}
    for field in ResourceLimits.__struct_fields__:
        cap = getattr(max_limits, field)
        value = getattr(chosen, field)
        if cap is None:
            continue
        if value is not None and value <= cap:
            continue
        asked = limits is not None and value != getattr(defaults, field)
        if asked:
            shown = "unlimited" if value is None else repr(value)
            problems.append(f"limits.{field}={shown} is over this registry's maximum of {cap!r}")
        else:
            changes[field] = cap
    if not changes:
        return chosen
    return msgspec.structs.replace(chosen, **changes)


def _upgrade_problems(
    found: Requirements, existing: Registration | None, allow_major: bool
) -> list[str]:
    if existing is None or existing.status == "unregistered" or not found.version:
        return []
    old = tuple(int(part) for part in existing.version.split("."))
    new = tuple(int(part) for part in found.version.split("."))
    if new < old:
        return [
            f"version {found.version} is lower than the registered {existing.version}; "
            "unregister it first to go back"
        ]
    if new[0] != old[0] and not allow_major:
        return [
            f"version {found.version} changes the MAJOR version of {existing.version}; "
            "pass allow_major=True if the change is intended"
        ]
    return []


def prepare_registration(
    target: str,
    *,
    limits: ResourceLimits | None,
    isolation: str | None,
    max_limits: ResourceLimits | None,
    prefix: Sequence[str],
    existing: Callable[[str], Registration | None],
    allow_major: bool,
    now: datetime,
    secrets: Sequence[str] = (),
) -> RegistrationRecord:
    """Check ``target`` completely and return the record to store (status ``registered``).

    ``existing(name)`` returns the newest registration of a name, if any
    (the name is known only once the worker reported the class).
    """
    if not isinstance(target, str) or not target:
        raise ExtensionInvalid("target must be a non-empty str such as 'module:Class'")
    if limits is not None and not isinstance(limits, ResourceLimits):
        raise ExtensionInvalid("limits must be a gotstate_persist.ResourceLimits")
    if isolation is not None and isolation not in ISOLATIONS:
        raise ExtensionInvalid(f"isolation must be one of {', '.join(ISOLATIONS)} (or None)")
    if isinstance(secrets, str) or not all(isinstance(s, str) and s for s in secrets):
        raise ExtensionInvalid(
            "secrets must be a list of names of the extension's Settings fields typed "
            "gp.Secret, such as ('api_token',)"
        )
    location = locate(target)
    files = pin(location)
    report = inspect_target(
        WorkerConfig(
            name=location.attr,
            location=location,
            files=files,
            limits=ResourceLimits(),
            prefix=tuple(prefix),
        )
    )
    found, problems = interface_problems(report, VERSION)
    granted = tuple(dict.fromkeys(secrets))
    problems.extend(_grant_problems(report.settings, granted))
    if found.category in DEFAULT_ISOLATION:
        default = DEFAULT_ISOLATION[found.category]
        if isolation is None:
            isolation = default
        elif isolation == "worker" and found.category == "persistence":
            problems.append(
                "persistence extensions run in-process: their backends and formats are "
                "objects the host calls (behind the quota adapter, seeing only sealed bytes)"
            )
    chosen = _capped(limits, max_limits, problems)
    problems.extend(limit_problems(chosen))
    previous = existing(found.name) if found.name else None
    problems.extend(_upgrade_problems(found, previous, allow_major))
    if problems:
        numbered = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise ExtensionInvalid(
            f"extension target {target!r} cannot be registered: {numbered}",
            problems=tuple(problems),
        )
    reason = "registered"
    if previous is not None and previous.status != "unregistered":
        reason = f"upgraded from {previous.version} (revision {previous.revision})"
    return RegistrationRecord(
        name=found.name,
        category=found.category,  # type: ignore[arg-type]
        version=found.version,
        target=target,
        isolation=isolation or "worker",  # type: ignore[arg-type]
        limits=chosen,
        code_sha256=code_sha256(files),
        files=files,
        interface=found.interface,
        status="registered",
        reason=reason,
        changed_at=now,
        location=location,
        requires=found.requires,
        states=found.states,
        has_settings=report.settings is not None,
        settings_fields=report.settings.fields if report.settings is not None else (),
        secret_fields=report.settings.secret_fields if report.settings is not None else (),
        secrets=granted,
    )


def _grant_problems(settings: SettingsInfo | None, granted: tuple[str, ...]) -> list[str]:
    """Each granted name must be a Settings field typed gp.Secret."""
    if not granted:
        return []
    if settings is None:
        return [
            f"secrets={list(granted)!r} are granted, but the class declares no Settings "
            "(a msgspec Struct with gp.Secret fields)"
        ]
    return [
        f"secret {name!r} is granted, but it is not a field of Settings typed gp.Secret"
        for name in granted
        if name not in settings.secret_fields
    ]
