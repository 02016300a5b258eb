"""Findings as LSP diagnostics, fixes as text edits, and the `# noqa: GLnnn` edit that silences one.

Findings count rows and columns from 1, in characters; LSP counts from 0, in the client's code units
(UTF-16 unless negotiated): pygls' position codec converts, given the document's lines.
"""

from __future__ import annotations

import io
import re
import tokenize
from typing import Optional

from lsprotocol import types
from pygls.workspace import TextDocument
from pygls.workspace.position_codec import ServerTextPosition, ServerTextRange

from ..diagnostics import Edit, Finding, Location
from ..reporters import rule_url

SOURCE = "gradlint"
_NOQA = re.compile(r"#\s*noqa(?::\s?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)


def _position(location: Location) -> ServerTextPosition:
    return ServerTextPosition(line=location.row - 1, character=location.column - 1)


def lsp_range(document: TextDocument, start: Location, end: Location, lines=None) -> types.Range:
    """`lines`: the document's lines, when the caller converts many ranges (pygls splits them anew on
    every access)."""
    lines = document.lines if lines is None else lines
    return document.position_codec.range_to_client_units(lines, ServerTextRange(start=_position(start),
                                                                                end=_position(end)))


def diagnostics(findings, document: TextDocument) -> list[types.Diagnostic]:
    lines = document.lines
    return [diagnostic(finding, document, lines) for finding in findings]


def diagnostic(finding: Finding, document: TextDocument, lines=None) -> types.Diagnostic:
    end = finding.end_location
    if end == finding.location:  # a syntax or read error points at a place: show one character
        end = Location(end.row, end.column + 1)
    url = rule_url(finding.code, finding.rule_name)
    return types.Diagnostic(
        range=lsp_range(document, finding.location, end, lines),
        message=finding.message,
        severity=types.DiagnosticSeverity.Error if finding.is_file_error else types.DiagnosticSeverity.Warning,
        code=finding.code,
        code_description=types.CodeDescription(href=url) if url else None,
        source=SOURCE,
    )


def text_edit(edit: Edit, document: TextDocument) -> types.TextEdit:
    return types.TextEdit(range=lsp_range(document, edit.location, edit.end_location), new_text=edit.content)


def whole_document_edits(document: TextDocument, new_text: str) -> list[types.TextEdit]:
    """The edits that turn the document into `new_text` (only the spans that change)."""
    from ..edits import diff_edits

    return [text_edit(edit, document) for edit in diff_edits(document.source, new_text)]


def noqa_edit(finding: Finding, document: TextDocument) -> Optional[types.TextEdit]:
    """Add `# noqa: CODE` on a line where it silences the finding: its own line, unless that line ends
    inside a string (then the statement's first or last line); an existing noqa gets the code added."""
    lines = document.lines
    in_string = _rows_ending_in_strings(document.source)
    rows = [finding.location.row, *finding.noqa_rows]
    row = next((r for r in rows if r not in in_string and 0 < r <= len(lines)), None)
    if row is None:
        return None
    line = lines[row - 1]
    body = line.rstrip("\r\n")
    existing = _NOQA.search(body)
    if existing is not None:
        if existing.group("codes") is None:
            return None  # a bare noqa already silences everything on the line
        new = body[:existing.end()] + f", {finding.code}" + body[existing.end():]
    else:
        new = body.rstrip() + f"  # noqa: {finding.code}"
    start, end = Location(row, 1), Location(row, len(body) + 1)
    return types.TextEdit(range=lsp_range(document, start, end), new_text=new)


def _rows_ending_in_strings(source: str) -> set[int]:
    """Rows whose end lies inside a string that goes on to the next row (a comment there would be text)."""
    rows: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.STRING or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
                rows.update(range(token.start[0], token.end[0]))
    except (tokenize.TokenError, SyntaxError):
        pass
    return rows
