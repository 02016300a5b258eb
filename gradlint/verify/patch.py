"""Copies of the user's project for the two runs: one as it is, one with gradlint's safe fixes applied.

Both runs execute from copies, so neither writes into the user's tree (checkpoints, `__pycache__`);
the original copy is byte for byte the user's code. Torch-free.
"""

from __future__ import annotations

import difflib
import io
import shutil
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Not part of a training project's code, and possibly large.
IGNORED = (".git", ".hg", ".svn", "__pycache__", "*.pyc", ".venv", "venv", "env", "node_modules", ".mypy_cache",
           ".pytest_cache", ".ruff_cache", ".gradlint_cache", "*.egg-info", ".ipynb_checkpoints", "wandb",
           "lightning_logs")


@dataclass
class FilePatch:
    path: str  # relative to the project folder
    fixed: int
    codes: dict  # code -> count of findings the fixes removed
    diff: str
    remaining: list = field(default_factory=list)  # "code line message" of what the safe fixes left


@dataclass
class PatchResult:
    files: list[FilePatch] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def fixed(self) -> int:
        return sum(f.fixed for f in self.files)

    @property
    def codes(self) -> Counter:
        total: Counter = Counter()
        for f in self.files:
            total.update(f.codes)
        return total

    def to_dict(self) -> dict:
        return {"fixed": self.fixed, "codes": dict(sorted(self.codes.items())),
                "files": [{"path": f.path, "fixed": f.fixed, "codes": f.codes, "diff": f.diff,
                           "remaining": f.remaining} for f in self.files],
                "errors": self.errors}


def copy_project(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)
    return dest


def _decode(data: bytes) -> tuple[str, str]:
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    if encoding == "utf-8-sig":  # keep the BOM out of the text and put it back on writing
        return data[3:].decode("utf-8"), "utf-8-sig"
    return data.decode(encoding), encoding


def _unlocked(text: str, path: str, rules, outcome, found: Counter, unsafe: bool) -> Counter:
    """Fixes that only became possible after another one (GL006 puts `.train()` back once GL004 has added
    `.eval()`): the engine fixes to a fixpoint, so such a rule's finding is in neither the original nor
    the result. A rule contributed if fixing without it gives another text. Only for changed files, and
    only rules whose trigger the result still matches."""
    from gradlint.engine import fix_text, lint_text

    extra: Counter = Counter()
    for rule in rules:
        if rule.code in found or not rule.may_match(outcome.text):
            continue
        without = fix_text(text, path, [r for r in rules if r is not rule], {}, unsafe=unsafe)
        if without.text != outcome.text:
            left = sum(1 for f in outcome.remaining if f.code == rule.code)
            extra[rule.code] = max(1, len(lint_text(without.text, path, [rule])) - left)
    return extra


def fix_tree(root: Path, display_root: str = "", unsafe: bool = False) -> PatchResult:
    """Apply the safe fixes (and with `unsafe`, the unsafe ones) of every rule to every .py file under `root`,
    in place: `root` is a copy."""
    from gradlint.engine import fix_text, lint_text
    from gradlint.registry import all_rules

    rules = all_rules()
    result = PatchResult()
    for path in sorted(root.rglob("*.py")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        shown = f"{display_root.rstrip('/')}/{rel}" if display_root else rel
        try:
            data = path.read_bytes()
            text, encoding = _decode(data)
        except (OSError, UnicodeDecodeError, SyntaxError) as error:
            result.errors.append(f"{shown}: not read: {error}")
            continue
        try:
            outcome = fix_text(text, str(path), rules, {}, unsafe=unsafe)
        except Exception as error:  # an engine bug must not stop the run: the file stays as it was
            result.errors.append(f"{shown}: not fixed: {type(error).__name__}: {error}")
            continue
        if outcome.text == text:
            continue
        before = Counter(f.code for f in lint_text(text, str(path), rules))
        after = Counter(f.code for f in outcome.remaining)
        found = before - after
        found.update(_unlocked(text, str(path), rules, outcome, found, unsafe))
        codes = dict(sorted(found.items()))
        body = outcome.text.encode("utf-8") if encoding == "utf-8-sig" else outcome.text.encode(encoding)
        path.write_bytes((b"\xef\xbb\xbf" + body) if encoding == "utf-8-sig" else body)
        diff = "".join(difflib.unified_diff(text.splitlines(keepends=True), outcome.text.splitlines(keepends=True),
                                            f"a/{shown}", f"b/{shown}"))
        remaining = [f"{f.code} {f.location.row}: {f.message}" for f in outcome.remaining]
        result.files.append(FilePatch(shown, max(outcome.fixed, sum(codes.values())), codes, diff, remaining))
    return result
