"""``gotstate-persist ui``: a local, read-only web inspector of a store.

Needs the ``ui`` extra (Starlette, uvicorn, Jinja2). The pieces: what is
read without a keyring (``_reader``), with one (``_records``, ``_admin``),
the state diagram (``_diagram``), the page data per route (``_views``),
the routes and templates (``_app``), who may read (``_access``: a token
and a cookie) and the server (``_server``). Every page reads through
``ReadOnlyBackend``, so nothing the inspector does can write to the store.
"""

from __future__ import annotations

from ._app import create_app
from ._reader import Inspector
from ._readonly import ReadOnlyBackend
from ._server import serve

__all__ = ["Inspector", "ReadOnlyBackend", "create_app", "serve"]
