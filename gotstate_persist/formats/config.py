"""The built-in record formats of configuration (kinds ``gotstate.config*``).

Two kinds, both ordinary sealed records of their namespace under system keys:

* ``gotstate.config-commit``: one version per committed change, of one key per
  namespace (the commit log). It is the single atomic commit point of every
  ``put``, ``rollback`` and transaction: it names every configuration's
  current version (``heads``) and carries the new values inline
  (``changes``), so a commit is one create-only write on every backend (one
  SQL transaction; an exclusive create on object stores) and a writer killed
  half-way leaves either no commit (all old) or a whole one (all new).
* ``gotstate.config``: one version of one configuration, under its own key,
  with the same version number as the configuration. Written from a commit
  after it landed ("materialized"), so these keys hold committed versions
  only, numbered without gaps: history, ``watch`` and retention read them.

The user's value travels as ``payload``: msgpack of their schema instance in
the configuration codec (``config._secret``), whatever codec the store uses,
because a ``Secret`` needs a msgpack extension type. ``schema_version`` is
the definition's format version of that payload (``define(version=)``), so
upcasters apply on read. These Structs are a stored format: a change is a new
format version with an upcaster, never an edit of version 1.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "COMMIT_FORMAT_VERSION",
    "COMMIT_KIND",
    "CONFIG_FORMAT_VERSION",
    "CONFIG_KIND",
    "ConfigCommit",
    "ConfigHead",
    "ConfigValue",
]

CONFIG_KIND = "gotstate.config"
CONFIG_FORMAT_VERSION = 1
COMMIT_KIND = "gotstate.config-commit"
COMMIT_FORMAT_VERSION = 1


class ConfigValue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One version of one configuration, as committed."""

    name: str
    version: int
    schema_version: int
    payload: bytes
    commit: int
    changed_at_us: int
    reason: str = ""


class ConfigHead(msgspec.Struct, frozen=True, array_like=True):
    """Where a configuration stands: its current version and the commit that wrote it."""

    version: int
    commit: int


class ConfigCommit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One commit: every configuration's head after it, and the values it wrote."""

    heads: dict[str, ConfigHead]
    changes: list[ConfigValue]
