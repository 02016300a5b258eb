"""GitLab Code Quality, as ruff writes it: a JSON list of issues with a stable fingerprint each.

Paths are relative to `CI_PROJECT_DIR` when GitLab CI sets it (else to the working directory). A
fingerprint hashes the rule and the file, not the line, so an issue keeps its identity when code above it
moves; findings of one rule in one file are told apart by chaining the hash, as ruff does.
"""

from __future__ import annotations

import hashlib
import json
import os

from ..diagnostics import Location
from . import Report, position


def _path(filename: str, report: Report) -> str:
    absolute = os.path.abspath(os.path.join(report.cwd, filename))
    project = os.environ.get("CI_PROJECT_DIR")
    base = project or str(report.cwd)
    try:
        return os.path.relpath(absolute, base).replace(os.sep, "/")
    except ValueError:  # another drive (Windows)
        return absolute


def _fingerprint(rule: str, path: str, salt: str) -> str:
    return hashlib.blake2b(f"{salt}\0{rule}\0{path}".encode(), digest_size=8).hexdigest()


def render(report: Report) -> str:
    issues, seen = [], set()
    for f in report.findings:
        path = _path(f.filename, report)
        fingerprint = _fingerprint(f.rule_name or f.code, path, "")
        while fingerprint in seen:
            fingerprint = _fingerprint(f.rule_name or f.code, path, fingerprint)
        seen.add(fingerprint)
        if f.cell is None:
            begin, end, where = f.location, f.end_location, ""
        else:  # a notebook's rows are its cell's: line 1 is a clear fallback (as in ruff), the text says where
            begin = end = Location(1, 1)
            where = f"{position(f)}: "
        issues.append({
            "check_name": f.code,
            "description": f"{f.code}: {where}{f.message}",
            "severity": "major",
            "fingerprint": fingerprint,
            "location": {"path": path, "positions": {
                "begin": {"line": begin.row, "column": begin.column},
                "end": {"line": end.row, "column": end.column}}},
        })
    return json.dumps(issues, indent=2)
