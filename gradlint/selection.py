"""Which rules run and which fixes apply, decided as ruff decides them, from rule codes alone.

Selectors are whole codes (`GL001`), prefixes (`GL00`, `GL`) or `ALL`. A configuration is a chain of
*selections* (a base file that `extend`s, the file, then the command line), each with `select`,
`extend-select`, `ignore`, `fixable`, `extend-fixable` and `unfixable`:

- within one selection the more specific selector wins (`ignore = ["GL"]` with `extend-select =
  ["GL001"]` runs GL001); at equal specificity `ignore` wins;
- a selection with `select` replaces what the ones before it chose; without, it adds and removes;
- `select = [], ignore = [...]` carries its ignores over to the next selection (ruff's way to ignore
  rules across `extend`ed files);
- the defaults are the rules on by default (GL100, `unused-noqa`, is not); `ALL` and prefixes reach
  every rule; `fixable` starts as every rule.

`extend-safe-fixes` and `extend-unsafe-fixes` change a fix's applicability, the more specific selector
winning and `extend-unsafe-fixes` winning ties. Nothing here imports a rule: the warm path stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Optional, Sequence

from .diagnostics import SAFE, UNSAFE, Finding, Fix

ALL = "ALL"


class UnknownSelector(ValueError):
    """A selector that matches no rule; the message names it and lists the rules."""


def specificity(selector: str) -> int:
    """`ALL` < `GL` < `GL0` < `GL00` < `GL001`."""
    return 0 if selector.upper() == ALL else len(selector)


def matches(code: str, selector: str) -> bool:
    return selector.upper() == ALL or code.startswith(selector.upper())


def check_selectors(codes: Sequence[str], selectors: Iterable[str], where: str = "") -> None:
    for selector in selectors:
        if not selector or not any(matches(code, selector) for code in codes):
            raise UnknownSelector(f"{where}unknown rule selector: `{selector}` (rules: {', '.join(codes)})")


@dataclass(frozen=True)
class RuleSelection:
    """One layer's selectors: a configuration file's, or the command line's."""

    select: Optional[tuple[str, ...]] = None
    extend_select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    fixable: Optional[tuple[str, ...]] = None
    extend_fixable: tuple[str, ...] = ()
    unfixable: tuple[str, ...] = ()
    where: str = field(default="", compare=False)  # "path: " of the file (or flag) that wrote it, for errors

    def selectors(self) -> list[str]:
        return [*(self.select or ()), *self.extend_select, *self.ignore, *(self.fixable or ()),
                *self.extend_fixable, *self.unfixable]

    def is_empty(self) -> bool:
        return not self.selectors() and self.select is None and self.fixable is None


def _apply(current: set, codes: Sequence[str], reset: Optional[tuple[str, ...]], on: Sequence[str],
           off: Sequence[str]) -> set:
    """One selection's effect on `current`: per rule, its most specific selector decides (`off` wins ties)."""
    decided: dict[str, tuple[int, bool]] = {}
    for selectors, enable in ((on, True), (off, False)):
        for selector in selectors:
            rank = specificity(selector)
            for code in codes:
                if matches(code, selector) and rank >= decided.get(code, (-1, False))[0]:
                    decided[code] = (rank, enable)
    if reset is not None:
        return {code for code, (_, enable) in decided.items() if enable}
    out = set(current)
    for code, (_, enable) in decided.items():
        (out.add if enable else out.discard)(code)
    return out


def resolve(codes: Sequence[str], defaults: Iterable[str], selections: Sequence[RuleSelection]
            ) -> tuple[frozenset, frozenset]:
    """(the enabled codes, the fixable codes) after every selection, in order."""
    for selection in selections:
        check_selectors(codes, selection.selectors(), selection.where)
    enabled, fixable = set(defaults), set(codes)
    carried_ignores: tuple[str, ...] = ()
    carried_unfixables: tuple[str, ...] = ()
    for selection in selections:
        enabled = _apply(enabled, codes, selection.select, [*(selection.select or ()), *selection.extend_select],
                         [*selection.ignore, *carried_ignores])
        fixable = _apply(fixable, codes, selection.fixable, [*(selection.fixable or ()), *selection.extend_fixable],
                         [*selection.unfixable, *carried_unfixables])
        carried_ignores = selection.ignore if (selection.select == () and not selection.extend_select) else ()
        carried_unfixables = (selection.unfixable if (selection.fixable == () and not selection.extend_fixable)
                              else ())
    return frozenset(enabled), frozenset(fixable)


def safety_overrides(codes: Sequence[str], extend_safe: Sequence[str], extend_unsafe: Sequence[str]
                     ) -> dict[str, str]:
    """code -> the applicability its fixes take (`extend-safe-fixes`, `extend-unsafe-fixes`)."""
    check_selectors(codes, [*extend_safe, *extend_unsafe])
    decided: dict[str, tuple[int, str]] = {}
    for selectors, applicability in ((extend_safe, SAFE), (extend_unsafe, UNSAFE)):
        for selector in selectors:
            rank = specificity(selector)
            for code in codes:
                if matches(code, selector) and rank >= decided.get(code, (-1, SAFE))[0]:
                    decided[code] = (rank, applicability)
    return {code: applicability for code, (_, applicability) in decided.items()}


@dataclass(frozen=True)
class FixPolicy:
    """What the configuration says about fixes: which rules may be fixed at all, and whose fixes change
    safety. `adjust` gives a finding as the configuration sees it (a rule that is not fixable loses its
    fix, as in ruff: no `[*]`, nothing applied)."""

    unfixable: frozenset = frozenset()
    applicability: dict = field(default_factory=dict)  # code -> SAFE or UNSAFE

    def adjust(self, finding: Finding) -> Finding:
        fix = finding.fix
        if fix is None or finding.is_file_error:
            return finding
        if finding.code in self.unfixable:
            return replace(finding, fix=None)
        wanted = self.applicability.get(finding.code, fix.applicability)
        return finding if wanted == fix.applicability else replace(finding, fix=Fix(wanted, fix.message, fix.edits))

    def __bool__(self) -> bool:
        return bool(self.unfixable or self.applicability)
