"""The fixed text of the user's files that a run imported: gradlint's safe fixes (with `unsafe`, the unsafe
ones too), as the static engine makes them. Nothing is written next to the user's files: the patched run
gets the texts through an import hook (see `imports`), and `--keep DIR` writes them for inspection.
Torch-free.
"""

from __future__ import annotations

import difflib
import io
import os
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from gradlint.notebook import is_notebook


@dataclass
class FilePatch:
    path: str  # as shown: relative to the working directory when inside it
    real: str  # the real path, where the import hook serves the text
    fixed: int
    codes: dict  # code -> count of findings the fixes removed
    diff: str
    text: str  # the fixed text
    remaining: list = field(default_factory=list)  # "code line message" of what the fixes left
    encoding: str = "utf-8"
    original: str = ""  # the text as read
    served: Optional[str] = None  # what the patched run executes, when not `text` (a notebook's script)


@dataclass
class PatchResult:
    files: list[FilePatch] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    considered: list[str] = field(default_factory=list)  # the imported project files, as shown
    seconds: float = 0.0

    @property
    def fixed(self) -> int:
        return sum(f.fixed for f in self.files)

    @property
    def codes(self) -> Counter:
        total: Counter = Counter()
        for f in self.files:
            total.update(f.codes)
        return total

    def sources(self) -> dict[str, str]:
        """Real path -> fixed text, for the import hook."""
        return {f.real: f.text if f.served is None else f.served for f in self.files}

    def to_dict(self) -> dict:
        return {"fixed": self.fixed, "codes": dict(sorted(self.codes.items())),
                "files": [{"path": f.path, "fixed": f.fixed, "codes": f.codes, "diff": f.diff,
                           "remaining": f.remaining} for f in self.files],
                "considered": self.considered, "seconds": round(self.seconds, 3), "errors": self.errors}


def shown(path: str, cwd: Optional[str] = None) -> str:
    """A path as the user would type it from `cwd`: relative inside it, absolute outside."""
    cwd = cwd or os.getcwd()
    try:
        rel = os.path.relpath(path, cwd)
    except ValueError:
        return path
    return path if rel == ".." or rel.startswith(".." + os.sep) else rel


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
    from gradlint.documents import fix_document, lint_document

    extra: Counter = Counter()
    for rule in rules:
        if rule.code in found or not rule.may_match(outcome.text):
            continue
        without = fix_document(text, path, [r for r in rules if r is not rule], {}, unsafe=unsafe)
        if without.text != outcome.text:
            left = sum(1 for f in outcome.remaining if f.code == rule.code)
            extra[rule.code] = max(1, len(lint_document(without.text, path, [rule])) - left)
    return extra


def fix_files(paths: list[str], unsafe: bool = False, cwd: Optional[str] = None) -> PatchResult:
    """The fixed text of each file in `paths` that any fix changes; the files themselves are only read.
    Which findings the fixes removed is worked out later (`attribute`): the patched run need not wait."""
    import time

    from gradlint.documents import fix_document
    from gradlint.registry import all_rules

    start = time.perf_counter()
    rules = all_rules()
    result = PatchResult(considered=[shown(p, cwd) for p in paths])
    for real in paths:
        name = shown(real, cwd)
        try:
            text, encoding = _decode(Path(real).read_bytes())
        except (OSError, UnicodeDecodeError, SyntaxError) as error:
            result.errors.append(f"{name}: not read: {error}")
            continue
        try:
            # A notebook's fixes go into its cells, as `gradlint fix nb.ipynb` writes them.
            outcome = fix_document(text, real, rules, {}, unsafe=unsafe)
        except Exception as error:  # an engine bug must not stop the run: the file stays as it was
            result.errors.append(f"{name}: not fixed: {type(error).__name__}: {error}")
            continue
        if outcome.text == text:
            continue
        served = None
        if is_notebook(real):
            from gradlint.notebook import notebook_script

            from .notebook import cell_diff

            served = notebook_script(outcome.text)
            diff = cell_diff(name, notebook_script(text), served)
            served = served.text
        else:
            diff = "".join(difflib.unified_diff(text.splitlines(keepends=True),
                                                outcome.text.splitlines(keepends=True), f"a/{name}", f"b/{name}"))
        result.files.append(FilePatch(name, real, outcome.fixed, {}, diff, outcome.text, [], encoding, text, served))
    result.seconds = time.perf_counter() - start
    return result


def attribute(result: PatchResult, unsafe: bool = False) -> None:
    """Per fixed file: the codes of the findings the fixes removed, and what they left."""
    from gradlint.documents import fix_document, lint_document
    from gradlint.registry import all_rules

    rules = all_rules()
    for patch in result.files:
        text = patch.original
        outcome = fix_document(text, patch.real, rules, {}, unsafe=unsafe)
        before = Counter(f.code for f in lint_document(text, patch.real, rules))
        after = Counter(f.code for f in outcome.remaining)
        found = before - after
        found.update(_unlocked(text, patch.real, rules, outcome, found, unsafe))
        patch.codes = dict(sorted(found.items()))
        patch.fixed = max(patch.fixed, sum(found.values()))
        patch.remaining = [f"{f.code} {_where(f)}: {f.message}" for f in outcome.remaining]


def _where(finding) -> str:
    return f"cell {finding.cell}, line {finding.location.row}" if finding.cell else str(finding.location.row)


def keep(result: PatchResult, folder: Path, anchor: str) -> list[Path]:
    """Write the fixed files under `folder`, at their paths relative to the common folder of `anchor` (the
    script's folder, or the working directory for a module) and the files; returns what was written."""
    reals = [f.real for f in result.files]
    root = os.path.commonpath([anchor, *[os.path.dirname(r) for r in reals]]) if reals else anchor
    written = []
    for f in result.files:
        target = folder / os.path.relpath(f.real, root)
        target.parent.mkdir(parents=True, exist_ok=True)
        body = f.text.encode("utf-8") if f.encoding == "utf-8-sig" else f.text.encode(f.encoding)
        target.write_bytes((b"\xef\xbb\xbf" + body) if f.encoding == "utf-8-sig" else body)
        written.append(target)
    return written
