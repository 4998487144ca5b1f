"""gotstate-persist-dbm: an example third-party backend for gotstate-persist.

Installing this package is all it takes: its entry point (group
``gotstate_persist.backends``, name ``dbm``) lets ``open_store`` resolve
``dbm:///path/to/state`` URLs without any import or registration call::

    import gotstate_persist as gp

    with gp.open_store("dbm:///var/lib/app/state", keyring=keys) as store:
        store.save_machine("order-42", machine)

It stores everything in one database of the standard library's ``dbm.dumb``
and uses only gotstate-persist's public API.
"""

from __future__ import annotations

from ._backend import LAYOUT_VERSION, DbmBackend

__all__ = ["LAYOUT_VERSION", "DbmBackend"]
