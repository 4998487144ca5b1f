"""The ``gotstate-persist`` command: keys, records, copies, quotas, maintenance, extensions,
configuration.

Commands that open records read the exported keyring from ``--keys FILE`` or,
by default, the environment variable ``GOTSTATE_PERSIST_KEYS`` (the one
``KeyRing.from_env()`` reads); ``usage`` and ``quota`` work on the backend
alone and need no keyring. Output goes to stdout; problems go to stderr with
exit status 1 (2 for usage errors), and never include key material or
credentials.

Names and values read from a store are escaped before they reach a terminal.
``ls``, ``verify``, ``usage`` and ``gc`` look at every namespace unless
``--namespace`` names one; ``copy``, ``migrate`` and ``reseal`` rewrite or copy
records, so they need ``--namespace`` or ``--all-namespaces``.

Each command group lives in a module of its own that registers its commands
(``_keys``, ``_inspect`` with ``_versions``, ``_history`` with ``_historyview``, ``_copy``,
``_quota``, ``_maintain``, ``_ext``, ``_config`` with ``_configinput`` and
``_configview``); ``show``'s document is ``_recordview``'s;
every ``--json`` document is written by ``_jsondoc`` (shapes: docs/json.md);
what they share is in ``_options`` (options and namespace scopes), ``_stores`` (opening
a store without creating one), ``_keyring`` and ``_output`` (escaping,
errors, exit statuses). The console script ``gotstate-persist`` and
``python -m gotstate_persist.cli`` both run :func:`main`.
"""

from __future__ import annotations

from ._main import main

# The exit statuses and the limit type were importable from the single-module
# ``cli``; they stay importable from here.
from ._output import EXIT_FAILED as EXIT_FAILED
from ._output import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from ._output import EXIT_OK as EXIT_OK
from ._output import EXIT_USAGE as EXIT_USAGE
from ._quota import LimitValue as LimitValue

__all__ = ["main"]
