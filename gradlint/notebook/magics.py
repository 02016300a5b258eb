"""IPython's own syntax in a code cell (`%time`, `!pip`, `x = !ls`, `obj?`, `%%capture`), masked for parsing.

A masked line is replaced by a Python statement that keeps its indentation (`pass`, or `x = None` for
`x = !ls`), so the cell parses and rows and the other lines' columns stay where they were. Only a line
that is not Python is masked, and only where a statement can start (tokenize, run up to that line, is
not left inside a bracket or a string): `% b)` continuing `x = (a` is a modulo, and a line of a
triple-quoted string is text.

A cell that starts with a cell magic runs as Python only for the magics that pass their body to the
kernel (`%%time`, `%%capture`, ...): that first line is masked. Any other cell magic (`%%bash`,
`%%writefile`, ...) makes the cell something else than Python: it takes no part in the module.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import warnings
from dataclasses import dataclass
from typing import Optional

# Cell magics whose body is Python run by the kernel (ruff's list).
TRANSPARENT_CELL_MAGICS = frozenset({
    "capture", "debug", "prun", "pypy", "python", "python3", "time", "timeit", "ipytest",
})
# IPython line magics that run without their `%` (automagic): `pip install torch`.
AUTOMAGICS = frozenset("""
    alias alias_magic autoawait autocall automagic bookmark cat cd clear colors conda config connect_info cp
    debug dhist dirs doctest_mode ed edit env gui hist history killbgscripts ldir less load load_ext loadpy
    logoff logon logstart logstate logstop ls lsmagic macro magic matplotlib mkdir more mv notebook page
    pastebin pdb pdef pdoc pfile pinfo pinfo2 pip popd pprint precision prun psearch psource pushd pwd pycat
    pylab qtconsole quickref recall rehashx reload_ext rep rerun reset reset_selective rm rmdir run save sc
    set_env store sx system tb time timeit unalias unload_ext who who_ls whos xdel xmode
""".split())

_ESCAPES = ("%", "!", "?", "/", ",", ";")
_ASSIGNED = re.compile(r"(?P<lhs>[A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*)\s*=\s*[!%]")
_WORD = re.compile(r"([A-Za-z_]\w*)\s+\S")
_CELL_MAGIC = re.compile(r"\s*%%(\w+)")
_ROWS = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


@dataclass(frozen=True)
class MaskedCell:
    text: str  # the cell with its IPython lines replaced by placeholders ("" when not Python)
    rows: frozenset  # 1-based rows of the cell that were masked
    python: bool = True  # False: a cell magic that is not Python (the cell takes no part)


def cell_magic(source: str) -> Optional[str]:
    """The name of the cell magic on the cell's first line (`%%capture` -> "capture"), if any."""
    match = _CELL_MAGIC.match(source)
    return match.group(1) if match else None


def _not_python(statement: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ast.parse(statement)
        except (SyntaxError, ValueError):
            return True
    return False


def _placeholder(line: str) -> Optional[str]:
    """The Python that stands for an IPython line (None if the line is Python, or not IPython)."""
    body = line.rstrip("\r\n")
    stripped = body.strip()
    if not stripped or stripped.startswith("#"):
        return None
    indent = body[:len(body) - len(body.lstrip())]
    assigned = _ASSIGNED.match(stripped)
    if assigned:
        return f"{indent}{assigned.group('lhs')} = None"
    word = _WORD.match(stripped)
    looks_ipython = (stripped.startswith(_ESCAPES) or stripped.endswith("?")
                     or (word is not None and word.group(1) in AUTOMAGICS and not _assigns(stripped, word)))
    if looks_ipython and _not_python(stripped):
        return f"{indent}pass"
    return None


def _assigns(stripped: str, word: re.Match) -> bool:
    """`colors = [...]`, `time, rest = ...`: IPython's assignment check comes before automagic (a name
    followed by `=` but not `==`, or by `,`, is Python), so `colors` here is a variable, not `%colors`."""
    rest = stripped[word.end(1):].lstrip()
    return (rest.startswith("=") and not rest.startswith("==")) or rest.startswith(",")


def _statement_can_start_after(prefix: str) -> bool:
    """Whether a statement can start right after `prefix`: no bracket, string or backslash continuation
    is left open (tokenize runs out of text inside one)."""
    try:
        for _ in tokenize.generate_tokens(io.StringIO(prefix).readline):
            pass
    except tokenize.TokenError as error:
        return "multi-line" not in str(error)
    except SyntaxError:
        pass  # other IPython lines further up: they do not continue onto this one
    return True


def mask_cell(source: str) -> MaskedCell:
    """The cell as Python: IPython lines masked (see the module docstring)."""
    lines = _ROWS.findall(source)
    magic = cell_magic(source)
    if magic is not None and magic not in TRANSPARENT_CELL_MAGICS:
        return MaskedCell("", frozenset(), python=False)
    placeholders: dict[int, str] = {}
    continued = None  # the indentation of a masked line that ends with a backslash
    for row, line in enumerate(lines, start=1):
        if continued is not None:  # `!pip install \\` goes on on this line
            placeholder = continued + "pass"
        elif row == 1 and magic is not None:
            placeholder = "pass"
        else:
            placeholder = _placeholder(line)
            # A line inside brackets or a string is Python after all (`% b)` continuing `x = (a`).
            if placeholder is None or not _statement_can_start_after(_render(lines[:row - 1], placeholders)):
                continue
        placeholders[row] = placeholder
        indent = line[:len(line) - len(line.lstrip())]
        continued = indent if line.rstrip("\r\n").endswith("\\") else None
    if not placeholders:
        return MaskedCell(source, frozenset())
    return MaskedCell(_render(lines, placeholders), frozenset(placeholders))


def _render(lines: list, placeholders: dict) -> str:
    out = []
    for row, line in enumerate(lines, start=1):
        if row in placeholders:
            out.append(placeholders[row] + line[len(line.rstrip("\r\n")):])
        else:
            out.append(line)
    return "".join(out)
