"""What changed between two versions of a configuration, with secrets redacted.

``cfg.diff`` and ``config diff`` show a change field by field, and a change to
a credential must show as a change without showing the credential. This
module owns that comparison: values are compared revealed (so a rotated
secret is a change) and reported as :func:`~gotstate_persist.config._secret.to_plain`
builtins with every secret :data:`REDACTED` on both sides.

Leaves: nested Structs and dicts are walked (``$.db.port``, ``$.limits.eu``);
everything else, lists included, is a leaf compared whole. A path present on
one side only (a dict key added or removed, a dict replaced by a scalar, or
the whole old version absent) is ``None`` on the other side. Paths use the
fields' encoded names, as problems and TOML files do.

Either side may also be schema-less builtins holding :class:`~._secret.Secret`
objects (``_secret.decode_untyped`` of a stored payload): the command line has
no schema, and diffs stored versions that way, with the same rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import msgspec

from gotstate_persist.config._secret import to_plain

__all__ = ["Comparable", "ConfigChange", "diff"]

_ROOT: Final = "$"


class ConfigChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One leaf that differs: its path and its old and new value (builtins, secrets redacted).

    ``old`` is None for a leaf the old version did not have, ``new`` for one
    the new version dropped.
    """

    path: str
    old: Any
    new: Any


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}")
    else:
        yield path, value


#: What :func:`diff` compares: a schema instance, or builtins as ``decode_untyped`` gives them.
Comparable = msgspec.Struct | dict[str, Any]


def _flatten(instance: Comparable | None, *, reveal: bool) -> dict[str, Any]:
    if instance is None:
        return {}
    return dict(_leaves(to_plain(instance, reveal=reveal), _ROOT))


def diff(old: Comparable | None, new: Comparable) -> list[ConfigChange]:
    """Every leaf that differs from ``old`` (None: nothing before) to ``new``, sorted by path.

    Both are instances of a schema, or both schema-less builtins with
    ``Secret`` objects where the secrets are (as ``decode_untyped`` returns).
    """
    old_clear, new_clear = _flatten(old, reveal=True), _flatten(new, reveal=True)
    old_shown, new_shown = _flatten(old, reveal=False), _flatten(new, reveal=False)
    return [
        ConfigChange(path, old_shown.get(path), new_shown.get(path))
        for path in sorted(old_clear.keys() | new_clear.keys())
        if path not in old_clear
        or path not in new_clear
        or old_clear[path] != new_clear[path]
        or type(old_clear[path]) is not type(new_clear[path])
    ]
