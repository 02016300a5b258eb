"""Where gradlint's cold time goes, phase by phase, in one process (no pool): what to optimise next.

    python benchmarks/profile_phases.py [CORPUS ...]      # default: timm transformers

Phases, timed around the engine's own functions (nothing in gradlint is changed):
discovery, read + hash, text prefilter (`active_rules`), `ast` reduction (`reduce_source`), LibCST parse
(of the reduced text, or the whole file where the engine falls back), rule walk, positions + findings
(+ fix edits), and the imports of a cold start. Then the whole CLI with `--jobs 1` and with the default
pool, which shows what the process pool costs and saves.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.corpus import corpus_dir  # noqa: E402


def _timed(totals, name):
    class _T:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            totals[name] += time.perf_counter() - self.t

    return _T()


def profile(corpus: str) -> None:
    root = corpus_dir(corpus)
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    t0 = time.perf_counter()
    import libcst as cst  # noqa: F401

    from gradlint import engine
    from gradlint.cache import digest
    from gradlint.discovery import Excluder, discover
    from gradlint.fsio import read_source
    from gradlint.regions import reduce_source
    from gradlint.registry import all_rules

    rules = all_rules()
    totals["import libcst + gradlint + rules"] = time.perf_counter() - t0

    with _timed(totals, "discovery"):
        files = discover([str(root)], Excluder(root, [], True))
    sources = []
    with _timed(totals, "read + hash"):
        for path in files:
            source = read_source(path)
            digest(source.raw)
            sources.append((path, source.text))
    parsed_lines = 0
    for path, text in sources:
        with _timed(totals, "prefilter (active_rules)"):
            active = engine.active_rules(text, rules)
        if not active:
            continue
        counts["files past the prefilter"] += 1
        with _timed(totals, "ast reduction (reduce_source)"):
            reduced = reduce_source(text, lambda region: any(r.may_match(region) for r in active))
        module = None
        if reduced is not None:
            counts["files reduced"] += 1
            with _timed(totals, "LibCST parse"):
                module = cst.parse_module(reduced)
            try:
                with _timed(totals, "rule walk"):
                    ctx = engine._run_rules(module, str(path), active, {}, partial=True)
                source_text = reduced
            except engine.FullModuleRequired:
                counts["full re-parse (fix or rule asked)"] += 1
                module = None
        if module is None:
            with _timed(totals, "LibCST parse"):
                try:
                    module = cst.parse_module(text)
                except Exception:
                    counts["parse errors"] += 1
                    continue
            with _timed(totals, "rule walk"):
                ctx = engine._run_rules(module, str(path), active, {}, partial=False)
            source_text = text
        parsed_lines += sum(1 for line in source_text.split("\n") if line.strip())
        with _timed(totals, "positions + findings + fix edits"):
            engine._findings(module, ctx, source_text, str(path))
    counts["non-blank lines LibCST parsed"] = parsed_lines
    counts["lines in corpus"] = sum(t.count("\n") for _, t in sources)
    total = sum(totals.values())
    print(f"\n== {corpus}: {len(files)} files, rules {[r.code for r in rules]}, one process")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"   {name:36} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")
    print(f"   {'total (in-process)':36} {total:7.2f} s")
    for name, n in counts.items():
        print(f"   {name:36} {n}")
    for label, extra in (("CLI --jobs 1", ["--jobs", "1"]), ("CLI default (pool)", [])):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gradlint", "check", str(root), "--select", "ALL", "--no-cache",
                        "--exit-zero", "-q", *extra], stdout=subprocess.DEVNULL, cwd="/tmp")
        print(f"   {label:36} {time.perf_counter() - start:7.2f} s wall")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradlint.cli, gradlint.engine, gradlint.registry as r; r.all_rules()"],
                   cwd="/tmp")
    print(f"   {'process start + imports alone':36} {time.perf_counter() - start:7.2f} s wall")


if __name__ == "__main__":
    for name in sys.argv[1:] or ["timm", "transformers"]:
        profile(name)
