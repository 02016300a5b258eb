"""GitHub Actions workflow commands: each finding becomes an annotation on the pull request."""

from __future__ import annotations

from . import Report, position


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render(report: Report) -> str:
    lines = []
    for f in report.findings:
        title = f"gradlint ({f.code})" if f.code else "gradlint"
        props = f"title={_escape_property(title)},file={_escape_property(f.filename)}"
        if f.cell is None:  # a notebook's rows are its cell's, not the .ipynb file's: the message says where
            props += (f",line={f.location.row},col={f.location.column},endLine={f.end_location.row},"
                      f"endColumn={f.end_location.column}")
        message = f"{f.filename}:{position(f)}: {f.code} {f.message}"
        lines.append(f"::error {props}::{_escape_data(message)}")
    return "\n".join(lines)
