"""One scan of a file's text for every rule's triggers.

Most trigger regexes match nothing in most files, and a regex that matches nothing reads the whole text:
with fifteen rules that was about a hundred full reads per file. Two things make it cheaper, without
changing what any trigger matches:

- each regex is run only if the literal strings it cannot match without (`softmax(` and `self.` in
  `self\\.\\w+\\(\\s*softmax\\(`) are all in the text; `str in str` reads text faster than a regex does,
  and one literal answers for every regex and rule that needs it;
- a regex that several rules share (the same `softmax(` trigger in GL008 and GL013) is run once per text.

`scan(text)` keeps the answers for the last text asked about: the engine asks about one file at a time,
through every rule's `may_match` and then the region finder.
"""

from __future__ import annotations

import re
from typing import Optional

try:  # Python 3.11+
    import re._constants as _sre
    import re._parser as _sre_parse
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_NEEDS: dict = {}  # compiled pattern -> the literals any match contains


def required_literals(pattern: re.Pattern) -> tuple[str, ...]:
    """The runs of literal characters in the top-level sequence of `pattern`: every match contains each.

    Anything but a plain literal (a class, a repeat, a group, an assertion) ends a run; a pattern whose
    top level is an alternation, or whose flags change what a literal matches, has none."""
    found = _NEEDS.get(pattern)
    if found is None:
        found = ()
        if not pattern.flags & (re.IGNORECASE | re.VERBOSE):
            runs, run = [], []
            for op, value in _sre_parse.parse(pattern.pattern, pattern.flags):
                if op is _sre.LITERAL:
                    run.append(chr(value))
                    continue
                if run:  # every item of the top-level sequence is matched: each run is in every match
                    runs.append("".join(run))
                run = []
            if run:
                runs.append("".join(run))
            found = tuple(sorted(set(runs), key=len, reverse=True))  # the longest is usually the rarest
        _NEEDS[pattern] = found
    return found


class TriggerScan:
    """Whether each trigger regex matches one text, each answered at most once."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._literals: dict = {}
        self._patterns: dict = {}

    def has(self, literal: str) -> bool:
        found = self._literals.get(literal)
        if found is None:
            found = self._literals[literal] = literal in self.text
        return found

    def search(self, pattern: re.Pattern) -> bool:
        key = (pattern.pattern, pattern.flags)
        found = self._patterns.get(key)
        if found is None:
            found = all(self.has(literal) for literal in required_literals(pattern)) \
                and pattern.search(self.text) is not None
            self._patterns[key] = found
        return found


_LAST: list = [None]  # the TriggerScan of the text asked about last


def scan(text: str) -> TriggerScan:
    last: Optional[TriggerScan] = _LAST[0]
    if last is None or last.text is not text:
        last = _LAST[0] = TriggerScan(text)
    return last
