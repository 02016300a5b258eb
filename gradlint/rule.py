r"""What a rule is: one small class with its docs, its examples and LibCST visit methods.

A rule knows nothing about files, output formats or the CLI. It declares:

- ``code`` (``GL001``), ``name`` (``unguarded-norm-division``) and a docstring that is its documentation
  (What it does / Why is this bad? / Example / Use instead / Fix safety / Options);
- ``triggers``: groups of regexes; every group must have a regex that matches a file (and the region of
  the file that holds the finding: a function, or the module's loose statements, see ``regions``) for
  the rule to possibly report there. The engine skips parsing what cannot match, so a trigger must never
  hide a finding: the INVALID examples of every rule are run through it by a test. Start each regex with
  a literal (``\.norm(?<!self\.norm)\s*\(``, not ``(?<!self)\.norm``): Python scans for a literal
  prefix fast and tries every position otherwise (0.05 s against 1 s on transformers);
- ``callee_triggers`` (0: none): trigger groups from this index on may instead match in a module-level
  function that the region calls by name (`x / helper(x)` with the norm in `helper`);
- ``options``: settings read from ``[tool.gradlint.<name>]``;
- ``VALID`` and ``INVALID`` examples, run by one parametrised test;
- ``visit_<Node>`` / ``leave_<Node>`` methods, called in one shared traversal, that call ``self.report``.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional, Sequence, Union

from .diagnostics import SAFE, UNSAFE
from .triggers import scan

if TYPE_CHECKING:
    import ast

    import libcst as cst

    from .context import FileContext


@dataclass(frozen=True)
class Option:
    """A rule setting read from `[tool.gradlint.<rule-name>]`.

    A number must be finite and of the default's kind (a whole number where the default is an int), and
    lie in its declared range: `above` (exclusive), `at_least`, `below` (exclusive), `at_most`.
    `problem(value)` says what is wrong with a configured value, or None."""

    name: str
    default: Any
    doc: str
    above: Optional[float] = None
    at_least: Optional[float] = None
    below: Optional[float] = None
    at_most: Optional[float] = None

    def problem(self, value: Any) -> Optional[str]:
        if isinstance(self.default, bool):
            return None if isinstance(value, bool) else f"must be true or false, like {_toml(self.default)}"
        if isinstance(self.default, (int, float)):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return f"must be a number, like {_toml(self.default)}"
            if not math.isfinite(value):
                return f"must be a finite number, not {_toml(value)}"
            if isinstance(self.default, int) and not float(value).is_integer():
                return f"must be a whole number, not {value!r}"
            if self.range_text() and not self._in_range(value):
                return f"must be {self.range_text()}, not {_toml(value)}"
            return None
        if type(value) is not type(self.default):
            return f"must be like {_toml(self.default)}"
        return None

    def _in_range(self, value: float) -> bool:
        return ((self.above is None or value > self.above) and (self.at_least is None or value >= self.at_least)
                and (self.below is None or value < self.below) and (self.at_most is None or value <= self.at_most))

    def range_text(self) -> str:
        """`> 0 and < 1`, `>= 2`; empty when any finite number will do."""
        parts = [f"{sign} {bound:g}" for sign, bound in
                 ((">", self.above), (">=", self.at_least), ("<", self.below), ("<=", self.at_most))
                 if bound is not None]
        return " and ".join(parts)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    return repr(value)


@dataclass(frozen=True)
class Valid:
    code: str
    note: str = ""


@dataclass(frozen=True)
class Invalid:
    code: str
    expected: Optional[str] = None  # the file after `fix --write --unsafe-fixes`; None: no fix offered
    unsafe: bool = False  # the fix needs --unsafe-fixes
    count: int = 1  # findings the rule reports on `code`
    note: str = ""


@dataclass
class FixPlan:
    """A rewrite proposed by a rule: node replacements (LibCST nodes or sentinels) plus imports they need."""

    changes: dict  # id(original node) -> (original node, replacement)
    applicability: str
    message: str
    imports: tuple[str, ...] = ()  # import statements to add, e.g. "import torch.nn.functional as F"


@dataclass(frozen=True)
class Reference:
    """How to spell a qualified name in this module, and the import to add if none reaches it yet."""

    expr: "cst.BaseExpression"
    import_line: Optional[str]


@dataclass
class Report:
    rule: "Rule"
    node: "cst.CSTNode"
    message: str
    fix: Optional[FixPlan]
    statement: Optional["cst.CSTNode"] = None
    extra: dict = field(default_factory=dict)


class Rule:
    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    triggers: ClassVar[Sequence[Union[str, Sequence[str]]]] = ()
    callee_triggers: ClassVar[int] = 0
    options: ClassVar[Sequence[Option]] = ()
    VALID: ClassVar[Sequence[Valid]] = ()
    INVALID: ClassVar[Sequence[Invalid]] = ()
    # False: the rule runs only when selected by its code or a prefix (as ruff's default leaves out RUF100).
    default_enabled: ClassVar[bool] = True
    # True: the rule visits no code; it judges the file's noqa directives once every other rule has
    # reported (see `UnusedNoqa`), through `message(details)` and `fix_message`.
    audits_noqa: ClassVar[bool] = False
    # False: the rule's hazard shows only on degenerate inputs or over a long run, which a test's fixed
    # inputs and assertions do not meet: it does not report inside tests (see `testcode`).
    reports_in_tests: ClassVar[bool] = True

    _compiled_triggers: ClassVar[Optional[tuple]] = None

    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx

    # -- prefilter -----------------------------------------------------------------------------------
    @classmethod
    def compiled_triggers(cls) -> tuple:
        if cls.__dict__.get("_compiled_triggers") is None:
            groups = ((g,) if isinstance(g, str) else tuple(g) for g in cls.triggers)
            compiled = (tuple(re.compile(p) for p in group) for group in groups)
            # Every group must match: asking the smallest group first fails soonest, in fewer reads.
            cls._compiled_triggers = tuple(sorted(compiled, key=len))
        return cls._compiled_triggers

    @classmethod
    def may_match(cls, text: str) -> bool:
        found = scan(text)  # shared by every rule asking about this text (see `triggers`)
        return all(any(found.search(p) for p in group) for group in cls.compiled_triggers())

    @classmethod
    def region_filter(cls, nodes: Sequence["ast.AST"], tree: Optional["ast.Module"], text: str) -> bool:
        """A finer prefilter for a region whose text matched the triggers: `nodes` are its statements in
        Python's `ast` (a function, or a run of statements), `tree` the whole file's, `text` its text. Return False only
        where the region cannot hold a finding (it is then not parsed with LibCST). Default: keep it."""
        return True

    # -- docs ----------------------------------------------------------------------------------------
    @classmethod
    def documentation(cls) -> str:
        text = textwrap.dedent(cls.__doc__ or "").strip()
        if not cls.reports_in_tests:
            text += ("\n\n## In tests\n"
                     "Not reported inside tests (a method of a `unittest.TestCase`, or what pytest collects in a "
                     "module that imports pytest: `test*` functions, `test*` methods of `Test*` classes), nor in "
                     "the functions and classes a test defines: a test runs fixed inputs and asserts on the "
                     "outcome, so this hazard, which needs degenerate inputs or a long training run, would "
                     "fail it loudly rather than spoil a result.")
        return text

    @classmethod
    def fix_availability(cls) -> str:
        """What the rule table shows, read from the examples: 'safe', 'unsafe', 'safe or unsafe', 'none',
        prefixed with 'sometimes' when some findings have no fix."""
        kinds = {"none" if ex.expected is None else "unsafe" if ex.unsafe else "safe" for ex in cls.INVALID}
        fixed = " or ".join(k for k in ("safe", "unsafe") if k in kinds) or "none"
        return f"sometimes {fixed}" if "none" in kinds and fixed != "none" else fixed

    # -- helpers for subclasses ----------------------------------------------------------------------
    def option(self, name: str) -> Any:
        return self.ctx.option(self, name)

    def report(self, node: "cst.CSTNode", message: str, fix: Optional[FixPlan] = None,
               statement: Optional["cst.CSTNode"] = None) -> None:
        """Report `node`. `# noqa` works on its line and on the first and last lines of `statement` (by
        default the statement the walk is in; a rule judging a routine as it leaves it names its own)."""
        self.ctx.add_report(Report(self, node, message, fix), statement)

    def reference(self, qualified: str, at: Optional["cst.CSTNode"] = None) -> Reference:
        """How a fix spells `qualified` where the walk is (or at `at`), and the import it needs: see
        `FileContext.reference`. Put `ref.expr` in the replacement and pass `references=[ref]`."""
        return self.ctx.reference(qualified, at)

    def replace(self, node: "cst.CSTNode", replacement: Union["cst.CSTNode", Any], *, message: str,
                safe: bool = True, references: Sequence[Reference] = ()) -> FixPlan:
        return self.rewrite({node: replacement}, message=message, safe=safe, references=references)

    def insert_before(self, statement: "cst.CSTNode", new_statements: Sequence["cst.CSTNode"], *,
                      message: str, safe: bool = True, references: Sequence[Reference] = ()) -> FixPlan:
        """Insert statements before `statement` in its block (they take the block's indentation).

        The blank lines above `statement` move above the inserted code; its comments stay on it."""
        import libcst as cst

        new_statements = list(new_statements)
        lines = list(getattr(statement, "leading_lines", ()))
        blank = 0
        while blank < len(lines) and lines[blank].comment is None:
            blank += 1
        if blank and new_statements and hasattr(new_statements[0], "leading_lines"):
            new_statements[0] = new_statements[0].with_changes(leading_lines=lines[:blank])
            statement_after = statement.with_changes(leading_lines=lines[blank:])
        else:
            statement_after = statement
        return self.rewrite({statement: cst.FlattenSentinel([*new_statements, statement_after])},
                            message=message, safe=safe, references=references)

    def rewrite(self, mapping: dict, *, message: str, safe: bool = True,
                references: Sequence[Reference] = ()) -> FixPlan:
        imports = tuple(dict.fromkeys(r.import_line for r in references if r.import_line))
        return FixPlan(changes={id(k): (k, v) for k, v in mapping.items()},
                       applicability=SAFE if safe else UNSAFE, message=message, imports=imports)

    def require_full_module(self) -> None:
        """Ask to see the whole file: the engine parsed only the statements that match the triggers.

        A rule whose verdict depends on code elsewhere in the module (every call site of a helper, say)
        calls this when ``self.ctx.partial`` is true and the visible part cannot settle the verdict.
        """
        self.ctx.require_full_module()

    def code_of(self, node: "cst.CSTNode") -> str:
        return self.ctx.code_of(node)
