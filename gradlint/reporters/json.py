"""ruff's JSON shape: a list of findings with the rule's code and name, locations, the fix and its edits,
and a docs URL."""

from __future__ import annotations

import json
import os

from . import Report, rule_url


def _location(loc) -> dict:
    return {"row": loc.row, "column": loc.column}


def finding_dict(f, cwd) -> dict:
    fix = None
    if f.fix is not None:
        fix = {
            "applicability": f.fix.applicability,
            "message": f.fix.message,
            "edits": [{"content": e.content, "location": _location(e.location),
                       "end_location": _location(e.end_location)} for e in f.fix.edits],
        }
    return {
        "cell": f.cell,
        "code": f.code,
        "end_location": _location(f.end_location),
        "filename": os.path.abspath(os.path.join(cwd, f.filename)),
        "fix": fix,
        "location": _location(f.location),
        "message": f.message,
        "name": f.rule_name,
        "noqa_row": f.location.row,
        "severity": "error",
        "url": rule_url(f.code, f.rule_name),
    }


def render(report: Report) -> str:
    return json.dumps([finding_dict(f, report.cwd) for f in report.findings], indent=2)
