"""Linting the same document again and again (an editor's buffer), paying only for what changed.

`WarmLinter.lint` gives the findings `engine.lint_text` gives, but it keeps each region's results: the
file is split into the regions a rule could match (`regions.region_reductions`: each relevant function,
or the module's loose statements, with the imports, header and docstring), and a region whose reduced
text and row numbers are the same as last time is not parsed again. After a one-line edit, LibCST parses
the edited region alone; Python's own parser still reads the whole file (the syntax check).

A region whose rule asks for the whole module (`Rule.require_full_module`) makes that text be linted
whole, as `lint_text` would; that result is kept too, for the same text.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Optional, Sequence

import libcst as cst

from .context import FullModuleRequired
from .diagnostics import Finding
from .engine import NO_OPTIONS, Options, active_rules, imports_end_row, lint_reduction, lint_text, syntax_tree
from .regions import region_reductions
from .rule import Rule

MAX_ENTRIES = 4096  # regions kept, over every document of the linter (a few MB at most)


class WarmLinter:
    def __init__(self, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS) -> None:
        self.rules = tuple(rules)
        self.options = options
        self._results: OrderedDict = OrderedDict()

    def lint(self, text: str, path: str, *, edits: bool = True, describe_row: Optional[Callable[[int], str]] = None,
             describe_key: Hashable = None) -> list[Finding]:
        """`lint_text(text, path, rules, options, edits=edits, describe_row=describe_row)`, from kept
        regions where it can. `describe_key` changes whenever `describe_row` would name a row differently
        (a notebook's cell layout)."""
        tree = syntax_tree(text, path)
        if isinstance(tree, Finding):
            return [tree]
        rules = active_rules(text, self.rules)
        if not rules:
            return []
        if tree is None:  # syntax newer than this Python, that LibCST reads
            return self._whole(text, path, rules, tuple(r.code for r in rules), edits, describe_row, describe_key)
        reductions = region_reductions(text, rules, tree=tree)
        import_row = imports_end_row(text, tree)
        codes = tuple(rule.code for rule in rules)
        if reductions is None:
            return self._whole(text, path, rules, codes, edits, describe_row, describe_key)
        findings: dict = {}
        for reduction in reductions:
            reduced_import_row = reduction.reduced_row(import_row) if import_row else 0
            if reduced_import_row is None:
                return self._whole(text, path, rules, codes, edits, describe_row, describe_key)
            key = (reduction.text, tuple(reduction.rows), reduced_import_row, codes, path, edits, describe_key)
            found = self._get(key)
            if found is None:
                try:
                    found = lint_reduction(reduction, path, rules, self.options, reduced_import_row, edits=edits,
                                           describe_row=describe_row)
                except (FullModuleRequired, cst.ParserSyntaxError):
                    return self._whole(text, path, rules, codes, edits, describe_row, describe_key)
                self._put(key, found)
            for finding in found:  # a finding outside every region (on an import) comes from each: once
                findings.setdefault((finding.code, finding.location, finding.end_location, finding.message), finding)
        return sorted(findings.values(), key=Finding.sort_key)

    def _whole(self, text, path, rules, codes, edits, describe_row, describe_key) -> list[Finding]:
        key = ("whole", text, codes, path, edits, describe_key)
        found = self._get(key)
        if found is None:
            found = lint_text(text, path, rules, self.options, reduce=False, edits=edits, describe_row=describe_row)
            self._put(key, found)
        return list(found)

    def _get(self, key):
        found = self._results.get(key)
        if found is not None:
            self._results.move_to_end(key)
        return found

    def _put(self, key, findings: list) -> None:
        self._results[key] = findings
        while len(self._results) > MAX_ENTRIES:
            self._results.popitem(last=False)
