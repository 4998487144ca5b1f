"""``ui``: serve the local, read-only web inspector of a store (the ``ui`` extra).

The command opens the store for reading as every command does
(``open_existing``: never creating anything) behind a read-only adapter,
loads the keyring only when one is given (without it the pages show
metadata only) and the application's formats when named, then hands over
to :mod:`gotstate_persist.ui`. Without the extra installed it fails with
one line saying what to install.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

from ..errors import InvalidArgument
from ..sealing import DEFAULT_ENV_VAR
from ._keyring import load_keyring
from ._maintain import load_formats
from ._options import Subcommands, catalog_option, keys_option
from ._output import EXIT_OK
from ._stores import open_existing

__all__ = ["add_commands"]

#: What ``ui`` needs beyond the core install.
_UI_MODULES = ("starlette", "uvicorn", "jinja2")
_INSTALL = "install gotstate-persist[ui] to use the inspector (pip install 'gotstate-persist[ui]')"


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use 0 (any free port) to 65535")
    return int(text)


def _cmd_ui(args: argparse.Namespace) -> int:
    if any(importlib.util.find_spec(name) is None for name in _UI_MODULES):
        raise InvalidArgument(_INSTALL)
    from ..ui import Inspector, ReadOnlyBackend, serve

    given = args.keys is not None or os.environ.get(DEFAULT_ENV_VAR, "").strip()
    keyring = load_keyring(args.keys) if given else None
    formats = load_formats(args.formats) if args.formats else None
    with open_existing(args.url, args.catalog) as backend:
        inspector = Inspector.of(ReadOnlyBackend(backend), args.url, keyring, formats)
        try:
            serve(inspector, host=args.host, port=args.port, open_browser=args.open)
        except OSError as exc:
            raise InvalidArgument(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                "choose another --port (0: any free port)"
            ) from None
    return EXIT_OK


def add_commands(commands: Subcommands) -> None:
    """Add ``ui``."""
    ui = commands.add_parser(
        "ui",
        help="serve a local read-only web inspector of a store (prints the URL to open)",
    )
    ui.add_argument("url", help="store URL, e.g. sqlite:///state.db")
    catalog_option(ui)
    keys_option(ui)
    ui.add_argument(
        "--formats",
        metavar="MODULE:ATTR",
        help="the application's FormatRegistry (or a function returning one), to decode its kinds",
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument(
        "--port",
        type=_port,
        default=8765,
        help="port to listen on (default 8765; 0: any free port)",
    )
    ui.add_argument("--open", action="store_true", help="open the inspector in a web browser")
    ui.set_defaults(func=_cmd_ui)
