"""JUnit XML, as ruff writes it: a test suite per file (its absolute path), a failed test case per finding.

CI systems (GitLab, Jenkins, Azure) show these as test results. Control characters, which XML 1.0
cannot carry even escaped, are written as Python escapes.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from itertools import groupby

from . import Report
from .terminal import printable

PROGRAM = "gradlint"


def _testsuite(parent: ET.Element, name: str, tests: int, failures: int) -> ET.Element:
    return ET.SubElement(parent, "testsuite", {"name": name, "tests": str(tests), "skipped": "0", "errors": "0",
                                               "failures": str(failures), "package": f"org.{PROGRAM}"})


def render(report: Report) -> str:
    findings = sorted(report.findings, key=lambda f: f.filename)
    count = len(findings)
    root = ET.Element("testsuites", {"name": PROGRAM, "tests": str(max(count, 1)), "skipped": "0",
                                     "failures": str(count), "errors": "0"})
    if not findings:
        suite = _testsuite(root, PROGRAM, 1, 0)
        ET.SubElement(suite, "testcase", {"name": "No errors found", "classname": PROGRAM})
    for filename, group in groupby(findings, key=lambda f: f.filename):
        group = list(group)
        name = printable(os.path.abspath(os.path.join(report.cwd, filename)))
        suite = _testsuite(root, name, len(group), len(group))
        for f in group:
            case = ET.SubElement(suite, "testcase", {
                "name": f"org.{PROGRAM}.{f.code}", "classname": os.path.splitext(name)[0],
                "line": str(f.location.row), "column": str(f.location.column)})
            properties = ET.SubElement(case, "properties")
            ET.SubElement(properties, "property", {"name": "severity", "value": "error"})
            message = printable(f.message)
            failure = ET.SubElement(case, "failure", {"message": message})
            cell = f"cell {f.cell}, " if f.cell is not None else ""  # a notebook: rows are the cell's
            failure.text = f"{cell}line {f.location.row}, col {f.location.column}, {message}"
    ET.indent(root, space="    ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
