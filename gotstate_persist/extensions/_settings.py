"""An extension's own settings: checked in a throwaway worker, stored as configuration.

``exts.configure(name, settings, expected_version=...)`` stores the settings
of one extension as the configuration ``extension/<name>`` (one CAS commit
of the namespace's configuration log, like ``store.config.put``). The host
never imports the extension, so it cannot hold its ``Settings`` class: the
registration recorded (from the inspection worker) which fields ``Settings``
has and which are typed ``gp.Secret``, and the candidate is validated
against ``Settings`` in a throwaway worker that imports the pinned code.

What crosses into that worker, and at activation into the extension, is
decided here, on the host: a secret field the registration was granted
(``register(..., secrets=("api_token",))``) in clear, every other secret
field as ``""``. So an extension never sees a secret it was not granted,
not even while its settings are validated, and never another extension's
settings (each reads only ``extension/<its name>``) or the store's
configurations. Settings take effect at the next activation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._pipeline import RecordPipeline
from ..config._commit import Change, ConfigLog, quota_retention, stale_version
from ..config._definitions import (
    ConfigRef,
    ExtensionSettings,
    extension_settings_name,
    ref_of,
)
from ..config._schema import keyring_encrypts
from ..config._secret import Secret, decode_config, encode_config, scrub, secret_values, to_plain
from ..errors import ConfigInvalid, InvalidArgument, NotFound
from ..formats.extension import RegistrationRecord
from ._protocol import CHECK_SETTINGS, WorkerConfig
from ._workerproc import inspect_target

__all__ = ["activation_settings", "store_settings"]

#: What a secret field the extension was not granted holds when it reaches it.
WITHHELD = ""


def _as_mapping(settings: object) -> dict[str, Any]:
    if isinstance(settings, msgspec.Struct):
        # builtins with Secret objects kept (the caller may hold the extension's class)
        return {field: getattr(settings, field) for field in type(settings).__struct_fields__}
    if isinstance(settings, Mapping) and all(isinstance(key, str) for key in settings):
        return dict(settings)
    raise InvalidArgument(
        "settings must be a mapping of the extension's Settings fields (as read from TOML "
        "or JSON) or an instance of its Settings"
    )


def _split(
    registration: RegistrationRecord, candidate: dict[str, Any], problems: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the check worker may see, what is stored), checking what the host can."""
    shown: dict[str, Any] = {}
    stored: dict[str, Any] = {}
    for field, value in candidate.items():
        if field not in registration.settings_fields:
            problems.append(f"$.{field}: unknown field of the extension's Settings")
        elif field in registration.secret_fields:
            if not isinstance(value, Secret | str):
                problems.append(f"$.{field}: expected `Secret` (given as `str`)")
                continue
            secret = value if isinstance(value, Secret) else Secret(value)
            stored[field] = secret
            shown[field] = secret.reveal() if field in registration.secrets else WITHHELD
        elif isinstance(value, Secret):
            problems.append(f"$.{field}: is not typed gp.Secret in the extension's Settings")
        else:
            try:
                shown[field] = stored[field] = to_plain(value)
            except InvalidArgument:
                problems.append(f"$.{field}: holds a value configurations cannot store")
    return shown, stored


def store_settings(
    pipeline: RecordPipeline,
    log: ConfigLog,
    registration: RegistrationRecord,
    settings: object,
    *,
    expected_version: int,
    prefix: tuple[str, ...],
    reason: str,
) -> ConfigRef:
    """Validate ``settings`` against the extension's Settings and commit them (CAS).

    ``ConfigInvalid`` lists every problem ("$.field: reason", never a value)
    and nothing is written; ``VersionConflict`` when the settings are not at
    ``expected_version`` (0: none stored yet).
    """
    if type(expected_version) is not int or expected_version < 0:
        raise InvalidArgument("expected_version must be an int >= 0 (0: the first settings)")
    if not isinstance(reason, str):
        raise InvalidArgument("reason must be a str")
    name = extension_settings_name(registration.name)
    candidate = _as_mapping(settings)
    if not registration.has_settings:
        raise ConfigInvalid(
            f"extension {registration.name!r} declares no Settings, so it takes no settings; "
            "nothing was written",
            problems=("$: the extension declares no Settings",),
        )
    seen = log.newest()
    stored = log.head_value(seen[1], name)
    actual = stored.version if stored is not None else 0
    if actual != expected_version:
        raise stale_version(name, expected_version, actual)
    problems: list[str] = []
    shown, kept = _split(registration, candidate, problems)
    if registration.secret_fields and not keyring_encrypts(pipeline.keyring):
        problems.append(
            "$: the extension's Settings has gp.Secret fields, and this store's keyring only "
            "signs: secrets are never stored readable; open the store with an encrypting keyring"
        )
    report = inspect_target(
        WorkerConfig(
            name=registration.name,
            location=registration.location,
            files=registration.files,
            limits=registration.limits,
            prefix=prefix,
            settings=shown,
        ),
        mode=CHECK_SETTINGS,
    )
    problems.extend(report.problems)
    if problems:
        secrets = secret_values(kept)
        shown_problems = tuple(scrub(problem, secrets) for problem in problems)
        raise ConfigInvalid(
            f"settings of extension {registration.name!r}: {len(shown_problems)} problem(s); "
            "nothing was written:\n  " + "\n  ".join(shown_problems),
            problems=shown_problems,
        )
    change = Change(name, expected_version, 1, encode_config(ExtensionSettings(kept)), reason)
    written = log.commit([change], max_versions=lambda: quota_retention(pipeline), seen=seen)
    return ref_of(written[0])


def activation_settings(log: ConfigLog, registration: RegistrationRecord) -> dict[str, Any] | None:
    """The newest settings of this extension as it may see them (None: none stored).

    Granted secrets in clear, every other secret field :data:`WITHHELD`.
    """
    try:
        stored = log.value(extension_settings_name(registration.name))
    except NotFound:
        return None
    value = decode_config(stored.payload, ExtensionSettings)
    return {
        field: (
            (item.reveal() if field in registration.secrets else WITHHELD)
            if isinstance(item, Secret)
            else to_plain(item)
        )
        for field, item in value.values.items()
    }
