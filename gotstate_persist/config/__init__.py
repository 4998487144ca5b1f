"""Typed, validated, versioned configuration stored as sealed records (``store.config``).

A configuration is a msgspec schema defined in the process plus a history
of sealed, versioned records of it in the namespace (see the README's
"Configuration" section). ``_commit`` owns atomicity and the stored layout,
``_store`` the facade and the validation pipeline, ``_live`` live values,
``_secret`` secrets and the payload codec, ``_schema`` schema checks and the
security policy, ``_providers``/``_env``/``_files``/``_resolve`` sources and
provenance, ``_diff`` diffs.
"""

from __future__ import annotations

from ._diff import ConfigChange
from ._env import EnvProvider
from ._files import FileProvider
from ._live import LiveConfig
from ._providers import ExtensionProvider, StoreProvider
from ._resolve import ConfigField
from ._secret import Secret
from ._store import ConfigRef, ConfigStore, ConfigTransaction

__all__ = [
    "ConfigChange",
    "ConfigField",
    "ConfigRef",
    "ConfigStore",
    "ConfigTransaction",
    "EnvProvider",
    "ExtensionProvider",
    "FileProvider",
    "LiveConfig",
    "Secret",
    "StoreProvider",
]
