"""Subcommands of the ``comcloak`` CLI: each module has ``add_parser(subparsers)`` and sets ``run``."""
