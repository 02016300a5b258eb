"""Generated Python (hypothesmith) with the rules' own defects spliced in: whatever the file, gradlint does
not crash, says E999 exactly when CPython refuses it, and its fixes compile, are stable, and change only
the bytes its reported edits cover.

CI runs a few examples; `GRADLINT_PROPERTY_EXAMPLES=2000 python -m pytest tests/test_property.py` (or
`python benchmarks/property_fuzz.py`) runs more.
"""

from __future__ import annotations

import ast
import os
import warnings

import pytest

hypothesis = pytest.importorskip("hypothesis")
hypothesmith = pytest.importorskip("hypothesmith")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gradlint import engine  # noqa: E402
from gradlint.engine import LibCSTCannotParse, fix_text, lint_text  # noqa: E402
from gradlint.registry import all_rules  # noqa: E402
from gradlint.runner import libcst_round_trips  # noqa: E402
from gradlint.syntax import CPYTHON_RECURSION_LIMIT, cpython_recursion_limit  # noqa: E402
from gradlint.workers import on_deep_stack  # noqa: E402

EXAMPLES = int(os.environ.get("GRADLINT_PROPERTY_EXAMPLES", "6"))
RULES = all_rules()
DEFECTS = [example.code for rule in RULES for example in rule.INVALID]


def cpython_refuses(source: str) -> bool:
    """What `python file.py` refuses before running anything: the parser, and the compiler's checks of
    `from __future__` imports (gradlint's E999, see gradlint/syntax.py)."""
    assert CPYTHON_RECURSION_LIMIT == 1000
    try:
        with warnings.catch_warnings(), cpython_recursion_limit():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(tree, "<generated>", "exec", dont_inherit=True)
    except SyntaxError as error:
        return "__future__" in str(error) or "not a chance" in str(error)
    except (ValueError, RecursionError, MemoryError):
        return False
    return False


@st.composite
def sources(draw):
    """A generated module with defects spliced in before some of its top-level statements (valid), or
    now and then at any line (often not)."""
    base = draw(hypothesmith.from_grammar())
    lines = base.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            starts = sorted({node.lineno - 1 for node in ast.parse(base).body if node.col_offset == 0})
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        starts = []
    anywhere = draw(st.booleans()) and draw(st.booleans())  # a quarter of the files: anywhere
    positions = list(range(len(lines) + 1)) if anywhere or not starts else [*starts, len(lines)]
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(positions))
        defect = draw(st.sampled_from(DEFECTS))
        lines.insert(min(at, len(lines)), defect if defect.endswith("\n") else defect + "\n")
    return "".join(lines)


def unchanged_outside_edits(original: str, fixed: str, edits) -> bool:
    """Every stretch of `original` that no reported edit touches is still in `fixed`, in order."""
    from gradlint.edits import offset_of

    cuts = sorted((offset_of(original, e.location), offset_of(original, e.end_location)) for e in edits)
    kept, cursor = [], 0
    for start, end in cuts:
        kept.append(original[cursor:max(cursor, start)])
        cursor = max(cursor, end)
    kept.append(original[cursor:])
    if len(kept) == 1:
        return fixed == original
    if not fixed.startswith(kept[0]) or not fixed.endswith(kept[-1]):
        return False
    position = len(kept[0])
    for stretch in kept[1:-1]:
        found = fixed.find(stretch, position)
        if found < 0:
            return False
        position = found + len(stretch)
    return position <= len(fixed) - len(kept[-1])


def refused_to_fix(source: str) -> bool:
    import tempfile
    from pathlib import Path

    from gradlint.runner import _WORKER, Job, Profile, check_file
    from gradlint.selection import FixPolicy

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated.py"
        path.write_bytes(source.encode("utf-8"))
        _WORKER.update(profiles=[Profile(tuple(RULES), {}, FixPolicy(), unsafe=True)], edits=False)
        outcome = check_file(Job("generated.py", str(path), lint=True, fix=True, write=True, may_write=True))
        unchanged = path.read_bytes() == source.encode("utf-8")
    no_fix_needed = not any(f.fixable(True) for f in outcome.findings or [])
    return unchanged and (no_fix_needed or "byte for byte" in (outcome.error or ""))


def one_round(text: str) -> str:
    return fix_text(text, "generated.py", RULES, unsafe=True, rounds=1).text


def check(source: str) -> None:
    def run():
        try:
            findings = lint_text(source, "generated.py", RULES)
        except LibCSTCannotParse:
            assert not cpython_refuses(source)
            return
        e999 = any(f.code == "E999" for f in findings)
        assert e999 == cpython_refuses(source), findings
        if e999:
            assert len(findings) == 1
            return
        if not libcst_round_trips(source):  # LibCST would lose text: gradlint refuses to fix it
            assert refused_to_fix(source)
            return
        outcome = fix_text(source, "generated.py", RULES, unsafe=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(outcome.text, "fixed.py", "exec", dont_inherit=True)  # the fix compiles
        assert fix_text(outcome.text, "generated.py", RULES, unsafe=True).text == outcome.text
        # Round by round (a fix can bring up another finding: GL004's eval() makes GL006 ask for train()),
        # each round changes only what that round's findings report as their edits.
        current = source
        for _ in range(len(lint_text(source, "generated.py", RULES)) + engine.EXTRA_FIX_ROUNDS):  # as fix_text
            edits = [e for f in lint_text(current, "generated.py", RULES) if f.fix is not None for e in f.fix.edits]
            after = one_round(current)
            assert unchanged_outside_edits(current, after, edits), (current, after)
            if after == current:
                break
            current = after
        assert current == outcome.text

    on_deep_stack(run)


@settings(max_examples=EXAMPLES, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(sources())
def test_generated_sources_with_defects_spliced_in(source):
    check(source)


@pytest.mark.parametrize("source", DEFECTS[:40])
def test_each_rule_example_on_its_own(source):
    check(source)
