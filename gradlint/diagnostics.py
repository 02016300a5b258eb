"""The plain data a check produces: findings, their fixes and edits.

Nothing here imports libcst, so the cached (warm) path and the reporters stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

SAFE = "safe"
UNSAFE = "unsafe"

# Findings that are not rule violations but problems with the file itself; like ruff, they are reported
# in the same stream, with their own codes, and cannot be ignored by --select/--ignore.
SYNTAX_ERROR = "E999"
IO_ERROR = "E902"


@dataclass(frozen=True)
class Location:
    row: int  # 1-based
    column: int  # 1-based, in characters


@dataclass(frozen=True)
class Edit:
    content: str
    location: Location
    end_location: Location
    cell: Optional[int] = None  # in a notebook: the cell (1-based) whose rows the locations count


@dataclass(frozen=True)
class Fix:
    applicability: str  # SAFE or UNSAFE
    message: str
    edits: tuple[Edit, ...] = ()


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    filename: str
    location: Location
    end_location: Location
    fix: Optional[Fix] = None
    rule_name: str = ""
    # Lines where a noqa comment silences this finding (the reported line and its statement's first and last).
    noqa_rows: tuple[int, ...] = field(default=(), compare=False)
    # In a notebook: the cell (1-based, among all its cells) whose rows `location`, `end_location` and
    # `noqa_rows` count; None for a plain source file.
    cell: Optional[int] = None

    @property
    def is_file_error(self) -> bool:
        return self.code in (SYNTAX_ERROR, IO_ERROR)

    def fixable(self, unsafe: bool = False) -> bool:
        return self.fix is not None and (unsafe or self.fix.applicability == SAFE)

    def sort_key(self):
        return (self.filename, self.cell or 0, self.location.row, self.location.column, self.code)


def file_error(code: str, filename: str, message: str, row: int = 1, column: int = 1) -> Finding:
    loc = Location(row, column)
    return Finding(code=code, message=message, filename=filename, location=loc, end_location=loc,
                   rule_name="syntax-error" if code == SYNTAX_ERROR else "io-error")
