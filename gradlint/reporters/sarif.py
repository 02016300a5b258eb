"""SARIF 2.1.0, as GitHub code scanning reads it: rules with their docs, results with relative URIs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import __version__
from . import Report, position, rule_url

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def _rules_metadata(codes) -> list[dict]:
    from ..registry import every_rule

    out = []
    for rule in every_rule():
        if rule.code not in codes:
            continue
        doc = rule.documentation()
        out.append({
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": rule.summary},
            "fullDescription": {"text": doc},
            "help": {"text": doc, "markdown": doc},
            "helpUri": rule_url(rule.code, rule.name),
            "defaultConfiguration": {"level": "error"},
            "properties": {"tags": ["correctness", "pytorch"], "fix": rule.fix_availability()},
        })
    return out


def _uri(filename: str, cwd: Path) -> str:
    absolute = Path(os.path.abspath(os.path.join(cwd, filename)))
    try:
        return absolute.relative_to(cwd).as_posix()
    except ValueError:
        return absolute.as_uri()


def render(report: Report) -> str:
    codes = sorted({f.code for f in report.findings if f.code.startswith("GL")})
    rules = _rules_metadata(codes)
    index = {rule["id"]: i for i, rule in enumerate(rules)}
    results = []
    for f in report.findings:
        physical = {"artifactLocation": {"uri": _uri(f.filename, report.cwd), "uriBaseId": "%SRCROOT%"}}
        result = {"ruleId": f.code, "level": "error", "message": {"text": f.message},
                  "locations": [{"physicalLocation": physical}]}
        if f.cell is None:
            physical["region"] = {"startLine": f.location.row, "startColumn": f.location.column,
                                  "endLine": f.end_location.row, "endColumn": f.end_location.column}
        else:  # a notebook's rows are its cell's, not the .ipynb file's: a result about the file, saying where
            result["message"] = {"text": f"{position(f)}: {f.message}"}
            result["properties"] = {"cell": f.cell, "row": f.location.row, "column": f.location.column,
                                    "endRow": f.end_location.row, "endColumn": f.end_location.column}
        if f.code in index:
            result["ruleIndex"] = index[f.code]
        results.append(result)
    log = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "gradlint", "version": __version__,
                                "informationUri": "https://github.com/gradlint/gradlint", "rules": rules}},
            "originalUriBaseIds": {"%SRCROOT%": {"uri": report.cwd.resolve().as_uri() + "/"}},
            "results": results,
        }],
    }
    return json.dumps(log, indent=2)
