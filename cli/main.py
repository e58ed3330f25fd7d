"""The ``comcloak`` command line. One module per subcommand under ``comcloak.cli``.

User errors (:class:`comcloak.errors.UserError`: bad arguments, missing inputs, unknown names) print one line to
stderr and exit with status 2; anything else is an internal bug and keeps its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from comcloak import __version__
from comcloak.errors import UserError, first_line, printable

EXIT_USER_ERROR = 2


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage block is one ``--help`` away)."""

    argv: list[str] = []  # the command line being parsed (set by main), for hints

    def error(self, message: str) -> None:  # type: ignore[override]
        dashed = [arg for arg in self.argv if arg.startswith("-") and len(arg) > 1 and Path(arg).exists()]
        if dashed:  # a photo named like an option: argparse cannot tell, the user can with --
            message += f"; {dashed[0]!r} is a file: put file names that start with '-' after --, e.g. " \
                       f"comcloak cloak -o OUT -- {dashed[0]}"
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class EscapingFormatter(logging.Formatter):
    """Log lines with the message's control characters escaped: a file name in a log line cannot clear the screen or
    forge a line (a traceback, added after the message, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return printable(super().formatMessage(record))


DESCRIPTION = ("Cloak photos so that image classifiers mislabel them, even after a social network recompresses them "
               "(ComReAdv). `comcloak demo` shows it on the bundled photos; `comcloak COMMAND --help` for each "
               "command.")


def build_parser() -> argparse.ArgumentParser:
    from comcloak.cli import bench, cloak, demo, eval_commodel, evaluate, export, serve, train

    parser = OneLineArgumentParser(prog="comcloak", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"comcloak {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)
    for module in (cloak, demo, serve, evaluate, eval_commodel, train, export, bench):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter("%(levelname)s %(name)s: %(message)s"))
    # Before the parser: building it loads plugins, whose warnings go through this handler too.
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    parser = build_parser()
    OneLineArgumentParser.argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING - 10 * min(args.verbose, 2))
    try:
        return int(args.run(args) or 0)
    except UserError as error:
        message = first_line(error)
        print(f"comcloak {args.command}: error: {printable(message)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("comcloak: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
