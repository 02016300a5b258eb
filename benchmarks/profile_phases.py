"""Where gradlint's cold time goes, phase by phase, in one process (no pool): what to optimise next.

    python benchmarks/profile_phases.py [CORPUS ...]      # default: timm transformers
    python benchmarks/profile_phases.py --cprofile timm   # and the top functions by own time

Nothing in gradlint is changed: the engine's own functions are wrapped while `engine.lint_text` runs on
every file, and each phase gets the time spent inside it minus the time of phases nested in it.
Phases: discovery, read + hash, `ast.parse` (syntax check and region finding), text prefilter
(`Rule.may_match`), region reduction (`reduce_source`, its ast parse excluded), LibCST parse, rule walk
(`_run_rules`), positions + findings + fix edits (`_findings`), and the rest of `lint_text`. Then the
whole CLI with `--jobs 1` and with the default pool, and a process that only imports what a cold run
imports: the difference shows what the pool and the start cost.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.corpus import corpus_dir  # noqa: E402


class Phases:
    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [name, start, time of nested phases]

    def wrap(self, owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)
        phases = self

        def wrapper(*args, **kwargs):
            phases._stack.append([name, time.perf_counter(), 0.0])
            try:
                return original(*args, **kwargs)
            finally:
                _, start, nested = phases._stack.pop()
                spent = time.perf_counter() - start
                phases.totals[name] += spent - nested
                phases.calls[name] += 1
                if phases._stack:
                    phases._stack[-1][2] += spent

        setattr(owner, attribute, wrapper)


def profile(corpus: str, use_cprofile: bool, with_edits: bool = False, gc_mode: str = "default") -> None:
    root = corpus_dir(corpus)
    phases = Phases()
    started = time.perf_counter()
    import libcst as cst

    from gradlint import engine
    from gradlint.cache import digest
    from gradlint.discovery import discover
    from gradlint.fsio import read_source
    from gradlint.registry import all_rules
    from gradlint.rule import Rule
    from gradlint.settings import Resolver

    rules = all_rules()
    phases.totals["import libcst + gradlint + rules"] = time.perf_counter() - started

    phases.wrap(ast, "parse", "ast.parse")
    phases.wrap(cst, "parse_module", "LibCST parse")
    for rule in rules:
        rule.compiled_triggers()
    holder = type("Holder", (), {"may_match": staticmethod(Rule.__dict__["may_match"].__func__)})
    phases.wrap(holder, "may_match", "prefilter (may_match)")
    Rule.may_match = classmethod(holder.may_match)  # subclasses inherit the timed one
    # Wrap the phases the engine calls by module-level name.
    for name, label in (("reduce_source", "region reduction (reduce_source)"),
                        ("_run_rules", "rule walk (_run_rules)"),
                        ("_findings", "positions + findings + fix edits"),
                        ("lint_text", "rest of lint_text")):
        if hasattr(engine, name):
            phases.wrap(engine, name, label)

    t = time.perf_counter()
    files = discover([str(root)], Resolver(root, isolated=True))
    phases.totals["discovery"] = time.perf_counter() - t
    t = time.perf_counter()
    sources = []
    for path in files:
        source = read_source(path)
        digest(source.raw)
        sources.append((path.relative_to(root).as_posix(), source.text))
    phases.totals["read + hash"] = time.perf_counter() - t

    import gc

    if gc_mode == "freeze":  # what a worker could do once its imports are done
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
    elif gc_mode == "off":
        gc.disable()
    profiler = None
    if use_cprofile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    counts = defaultdict(int)
    import inspect

    kwargs = {}
    if "edits" in inspect.signature(engine.lint_text).parameters:
        kwargs["edits"] = with_edits  # text output computes no fix edits; JSON, SARIF and fix do
    for display, text in sources:
        findings = engine.lint_text(text, display, rules, **kwargs)
        counts["findings"] += len(findings)
    if profiler is not None:
        profiler.disable()
    total = sum(phases.totals.values())
    print(f"\n== {corpus}: {len(files)} files, {sum(t.count(chr(10)) for _, t in sources)} lines, "
          f"rules {', '.join(r.code for r in rules)}; one process, no pool; fix edits "
          f"{'computed (JSON/SARIF/fix)' if with_edits else 'not computed (text output)'}; gc {gc_mode}")
    for name, seconds in sorted(phases.totals.items(), key=lambda kv: -kv[1]):
        calls = phases.calls.get(name)
        print(f"   {name:38} {seconds:7.2f} s {100 * seconds / total:5.1f} %"
              + (f"   ({calls} calls)" if calls else ""))
    print(f"   {'total in-process':38} {total:7.2f} s   findings: {counts['findings']}")
    if profiler is not None:
        import io
        import pstats

        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(25)
        print("\n".join(stream.getvalue().splitlines()[:45]))
    for label, extra in (("CLI --jobs 1 (whole process)", ["--jobs", "1"]), ("CLI default pool", [])):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gradlint", "check", str(root), "--select", "ALL", "--no-cache",
                        "--exit-zero", "-q", *extra], stdout=subprocess.DEVNULL, cwd="/tmp")
        print(f"   {label:38} {time.perf_counter() - t:7.2f} s wall")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradlint.cli, gradlint.runner, gradlint.engine, "
                    "gradlint.registry as r; r.all_rules()"], cwd="/tmp")
    print(f"   {'process start + cold imports only':38} {time.perf_counter() - t:7.2f} s wall")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradlint.cli, gradlint.runner, gradlint.cache, "
                    "gradlint.reporters"], cwd="/tmp")
    print(f"   {'process start + warm-path imports':38} {time.perf_counter() - t:7.2f} s wall")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("corpora", nargs="*", default=["timm", "transformers"])
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--edits", action="store_true", help="compute fix edits, as JSON/SARIF output does")
    parser.add_argument("--gc", choices=("default", "freeze", "off"), default="default",
                        help="freeze: gc.freeze() + gc.set_threshold(50_000, 20, 100) before linting")
    args = parser.parse_args()
    for corpus in args.corpora:
        profile(corpus, args.cprofile, args.edits, args.gc)
