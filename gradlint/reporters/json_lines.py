"""ruff's `json-lines`: one JSON object per finding and line, each shaped as in `json`."""

from __future__ import annotations

import json

from . import Report
from .json import finding_dict


def render(report: Report) -> str:
    return "\n".join(json.dumps(finding_dict(f, report.cwd), separators=(",", ":"))
                     for f in report.findings)
