"""Start the inspector: bind, then print the URL to open as the first line of stdout.

The socket is bound and listening before uvicorn starts serving on it, so
``--port 0`` can print the port the system chose; the URL is printed (and
flushed) only once the server accepts connections, so a script or a test
that reads the first line may connect at once.
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import os
import socket
import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import TextIO

import uvicorn

from ._access import new_token
from ._app import create_app
from ._reader import Inspector

__all__ = ["open_in_browser", "serve"]


class _Announcing(uvicorn.Server):
    """A uvicorn server that prints the URL (with its token) once it is serving."""

    def __init__(self, config: uvicorn.Config, url: str, out: TextIO, open_browser: bool) -> None:
        super().__init__(config)
        self._url = url
        self._out = out
        self._open_browser = open_browser
        self.launcher: Path | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        self._out.write(self._url + "\n")
        self._out.flush()
        if self._open_browser:
            self.launcher = open_in_browser(self._url)


def open_in_browser(url: str) -> Path:
    """Open ``url`` through a file only this user can read; returns the file (delete it after).

    A browser is started with the address it opens on its command line, which
    every local user can read (``/proc/PID/cmdline``); the token in ``url``
    must not be. So, as Jupyter does, the browser opens a page in a file of
    mode 0600 that forwards to ``url``.
    """
    fd, name = tempfile.mkstemp(prefix="gotstate-inspector-", suffix=".html")  # mode 0600
    quoted = html.escape(url, quote=True)
    with os.fdopen(fd, "w", encoding="utf-8") as page:
        page.write(
            '<!doctype html><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="0;url={quoted}">'
            f'<p><a href="{quoted}">Open the gotstate-persist inspector</a></p>\n'
        )
    path = Path(name)
    webbrowser.open(path.as_uri())
    return path


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    inspector: Inspector,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    open_browser: bool = False,
    out: TextIO = sys.stdout,
) -> None:
    """Serve ``inspector`` until interrupted (Ctrl-C)."""
    token = new_token()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    url = f"http://{_url_host(host)}:{bound}/?token={token}"
    config = uvicorn.Config(
        create_app(inspector, token),
        log_level="warning",
        access_log=False,
        server_header=False,
        lifespan="off",
    )
    if not _loopback(host):
        sys.stderr.write(
            f"gotstate-persist: note: listening on {host}, not only on this machine: anyone "
            "who can reach it and has the URL's token can read the store\n"
        )
    server = _Announcing(config, url, out, open_browser)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if server.launcher is not None:
            with contextlib.suppress(OSError):
                server.launcher.unlink()
