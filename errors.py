"""The one base class of the errors a user can cause (torch-free, so the CLI can name it without importing torch).

Every error that means "what was asked cannot be done as asked" — an unknown codec or classifier, eps out of
range, a missing input, a backend that cannot run here — derives from :class:`UserError` as well as from the
built-in type it always had (``ValueError``, ``RuntimeError``, ``ImportError``), so callers that caught those keep
working. The CLI catches :class:`UserError` once and prints its first line with exit status 2; any other exception
is a bug in comcloak and keeps its traceback.
"""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (what a one-line report prints), or its type's name if it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class UserError(Exception):
    """An error in what the user asked for; its message is one line saying what was asked and what exists."""


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (``\\x1b``, ``\\r``, ``\\n``), so that a file
    name printed in a message can neither clear the screen nor forge or break a line."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode() for char in text)
