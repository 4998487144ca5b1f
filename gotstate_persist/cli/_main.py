"""The ``gotstate-persist`` parser, assembled from its command groups, and ``main``.

Each command group declares its own commands, options and help; this module
only fixes the order they are listed in and runs the command chosen, so a
new command touches its group alone and no list of every flag exists.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from ._config import add_commands as add_config_commands
from ._copy import add_commands as add_copy_command
from ._ext import add_commands as add_ext_commands
from ._history import add_commands as add_history_commands
from ._inspect import add_commands as add_inspect_commands
from ._keys import add_commands as add_keys_commands
from ._maintain import add_commands as add_maintain_commands
from ._options import Subcommands
from ._output import EXIT_USAGE, CommandParser, run_command
from ._quota import add_commands as add_quota_commands
from ._ui import add_commands as add_ui_commands

__all__ = ["main"]

#: Every command group's registration, in the order ``--help`` lists the commands.
_COMMAND_GROUPS: tuple[Callable[[Subcommands], None], ...] = (
    add_keys_commands,  # keys
    add_inspect_commands,  # ls, show, verify
    add_history_commands,  # log, journal, diff (show --at is show's)
    add_copy_command,  # copy
    add_quota_commands,  # usage, quota
    add_maintain_commands,  # migrate, reseal, gc, db
    add_ext_commands,  # ext ls|show|history|register|activate|deactivate|unregister|verify|doctor
    add_config_commands,  # config ls|get|set|history|diff|rollback|explain|watch
    add_ui_commands,  # ui
)


def _parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = CommandParser(
        prog="gotstate-persist",
        description="Inspect and verify gotstate-persist stores.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add_commands in _COMMAND_GROUPS:
        add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage error (or --help)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run_command(args.func, args)
