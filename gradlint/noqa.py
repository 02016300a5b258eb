"""`# noqa` and `# noqa: GL001, GL005` suppression comments, as ruff and flake8 read them."""

from __future__ import annotations

import re
from typing import Iterable, Optional

_NOQA = re.compile(
    r"#\s*noqa(?::\s?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)
_CODE = re.compile(r"[A-Z]+[0-9]+", re.IGNORECASE)
_ROWS = re.compile(r"\r\n?|\n")


class NoqaMap:
    """Row -> suppressed codes (None: all) for the rows of one file that carry a noqa comment."""

    def __init__(self, text: str) -> None:
        self._rows: dict[int, Optional[frozenset[str]]] = {}
        if "noqa" not in text.lower():
            return
        for row, line in enumerate(_ROWS.split(text), start=1):
            match = _NOQA.search(line)
            if match is None:
                continue
            codes = match.group("codes")
            self._rows[row] = None if not codes else frozenset(c.upper() for c in _CODE.findall(codes))

    def suppresses(self, code: str, rows: Iterable[int]) -> bool:
        for row in rows:
            if row in self._rows:
                codes = self._rows[row]
                if codes is None or code in codes:
                    return True
        return False
