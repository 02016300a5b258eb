"""What the text reporters need to know about the terminal: colour, safe file names, pre-commit.

Colour, as ruff decides it: `--color always|never` wins; with `auto` (the default) a non-empty
`FORCE_COLOR` turns it on, a non-empty `NO_COLOR` (no-color.org) turns it off, and otherwise colour is
used when the output is a terminal that is not `TERM=dumb`.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, Mapping, Optional, TextIO

COLOR_CHOICES = ("auto", "always", "never")


def use_color(choice: str = "auto", stream: Optional[TextIO] = None,
              environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether to colour what goes to `stream` (default: stdout)."""
    if choice not in COLOR_CHOICES:
        raise ValueError(f"--color must be one of {', '.join(COLOR_CHOICES)}, not {choice!r}")
    if choice != "auto":
        return choice == "always"
    environ = os.environ if environ is None else environ
    if environ.get("FORCE_COLOR"):
        return True
    if environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and environ.get("TERM") != "dumb"


def in_pre_commit(environ: Optional[Mapping[str, str]] = None) -> bool:
    """pre-commit sets PRE_COMMIT=1 for the hooks it runs: there, a hint cannot ask for a command-line flag."""
    return (os.environ if environ is None else environ).get("PRE_COMMIT") == "1"


class Style:
    """ANSI styles that are the identity when colour is off."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def _wrap(self, code: str) -> Callable[[str], str]:
        if not self.color:
            return lambda text: text
        return lambda text: f"\x1b[{code}m{text}\x1b[0m"

    @property
    def bold(self):
        return self._wrap("1")

    @property
    def red(self):
        return self._wrap("1;31")

    @property
    def cyan(self):
        return self._wrap("36")

    @property
    def blue(self):
        return self._wrap("1;34")

    @property
    def green(self):
        return self._wrap("32")

    @property
    def yellow(self):
        return self._wrap("1;33")


# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators: each would break a
# line of output, move the cursor or start an escape sequence.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` as one inert line: control characters (a newline or an escape in a file name) are written
    escaped, as Python writes them in a string literal."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(lambda m: _NAMED.get(m.group()) or m.group().encode("unicode_escape").decode(), text)
