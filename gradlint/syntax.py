"""Is this file Python? E999 exactly when CPython refuses it, decided by CPython's own parser.

LibCST never sees a file that `ast` refused: its native parser can overflow the stack on input that
CPython rejects (1 600 nested parentheses, a 10 000-term chain), which kills the process. So a file
written in syntax newer than the running Python (PEP 695 on 3.11) is E999 too, and says so.

`ast.parse` runs at CPython's default recursion limit (the worker that lints raises the limit for
LibCST's deep trees): what `python file.py` rejects for depth, gradlint rejects the same way.
"""

from __future__ import annotations
import __future__

import ast
import io
import symtable
import sys
import tokenize
import warnings
from bisect import bisect_right
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Union

from .diagnostics import SYNTAX_ERROR, Finding, file_error

CPYTHON_RECURSION_LIMIT = 1000  # CPython's default: what `python file.py` runs with


@contextmanager
def cpython_recursion_limit() -> Iterator[None]:
    previous = sys.getrecursionlimit()
    if previous > CPYTHON_RECURSION_LIMIT:
        sys.setrecursionlimit(CPYTHON_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def python_syntax(text: str, path: str, units: Sequence[int] = (), *,
                  placement: bool = True) -> Union[ast.Module, Finding]:
    """The module's `ast`, or an E999 finding saying why CPython refuses it. `units`: the rows where a new
    unit of compilation starts (a notebook's cells, each compiled on its own: a `__future__` import at the
    top of any cell is legal); `placement=False` leaves where `__future__` imports stand unjudged."""
    try:
        with warnings.catch_warnings(), cpython_recursion_limit():
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=path)
    except SyntaxError as error:
        message = f"SyntaxError: {error.msg}{_newer_syntax_note(text)}"
        return file_error(SYNTAX_ERROR, path, message, error.lineno or 1, error.offset or 1)
    except (ValueError, RecursionError, MemoryError) as error:
        # ValueError: a NUL byte; RecursionError/MemoryError: nesting or a chain too deep for CPython.
        detail = str(error) or "too deeply nested for CPython"
        return file_error(SYNTAX_ERROR, path, f"SyntaxError: {type(error).__name__}: {detail}")
    future = _future_import_error(tree, units, placement)
    if future is not None:
        return file_error(SYNTAX_ERROR, path, f"SyntaxError: {future[0]}", future[1], future[2])
    return tree


def parses(text: str, path: str) -> bool:
    """True when CPython surely accepts `text`, found without building its `ast`: for a file no rule needs to
    look into, only the verdict counts. CPython's symbol table needs its parser's tree but never turns it into
    Python objects (a quarter cheaper than `ast.parse`). False means "ask `python_syntax`": the symbol table
    refuses some code the parser accepts (`nonlocal` at module level), and accepts some `__future__` imports
    the compiler refuses (a late one; any on Python 3.9), so a file that mentions `__future__` is asked too."""
    if "__future__" in text:
        return False
    try:
        with warnings.catch_warnings(), cpython_recursion_limit():
            warnings.simplefilter("ignore")
            symtable.symtable(text, path, "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _future_import_error(tree: ast.Module, units: Sequence[int] = (),
                         placement: bool = True) -> Optional[tuple[str, int, int]]:
    """CPython's compiler (not its parser) rejects a `from __future__` import after other code, or of an
    unknown feature. Checked on the module's top-level statements, which is where they can be legal; each of
    `units` (rows) starts afresh."""
    leading, unit, first = True, None, 0
    for index, stmt in enumerate(tree.body):
        here = bisect_right(units, stmt.lineno)
        if here != unit:  # the first statement of a unit (the module's, or a notebook cell's)
            leading, unit, first = True, here, index
        is_future = isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__" and stmt.level == 0
        if is_future:
            if not leading and placement:
                return ("from __future__ imports must occur at the beginning of the file", stmt.lineno,
                        stmt.col_offset + 1)
            for alias in stmt.names:
                if alias.name not in __future__.all_feature_names:
                    message = ("not a chance" if alias.name == "braces"
                               else f"future feature {alias.name} is not defined")
                    return message, stmt.lineno, stmt.col_offset + 1
            continue
        docstring = (index == first and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                     and isinstance(stmt.value.value, str))
        if not docstring:
            leading = False
    return None


# -- syntax newer than this Python ------------------------------------------------------------------

def _newer_syntax_note(text: str) -> str:
    """' (... needs Python 3.N; gradlint runs on 3.M)' when the file uses syntax this Python predates."""
    found = _newer_syntax(text)
    if found is None:
        return ""
    what, version = found
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f" ({what} needs Python {version[0]}.{version[1]}; gradlint runs on Python {running})"


def _newer_syntax(text: str) -> Optional[tuple[str, tuple[int, int]]]:
    """Tell-tale tokens of syntax newer than the running Python, read with the tokenizer (no parser)."""
    tokens = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type not in (tokenize.COMMENT, tokenize.NL):
                tokens.append(token)
    except (tokenize.TokenError, SyntaxError, IndentationError, ValueError):
        pass  # the tokens read so far still tell
    at_statement_start = True
    for i, token in enumerate(tokens):
        following = tokens[i + 1:i + 3]
        kinds = [(t.type, t.string) for t in following]
        if sys.version_info < (3, 12):
            if (at_statement_start and token.string == "type" and len(kinds) == 2
                    and kinds[0][0] == tokenize.NAME and kinds[1][1] in ("=", "[")):
                return "a `type` statement (PEP 695)", (3, 12)
            if (token.string in ("def", "class") and len(kinds) == 2 and kinds[0][0] == tokenize.NAME
                    and kinds[1][1] == "["):
                return "type parameter syntax (PEP 695)", (3, 12)
        if sys.version_info < (3, 14):
            if (token.type == tokenize.NAME and token.string.lower() in ("t", "rt", "tr")
                    and following and following[0].type == tokenize.STRING
                    and following[0].start == token.end):
                return "a template string (PEP 750)", (3, 14)
        at_statement_start = token.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) or (
            token.type == tokenize.OP and token.string == ";")
    return None
