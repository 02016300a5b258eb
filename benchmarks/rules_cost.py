"""What a set of rules adds to a cold check: all rules against the same code with those rules ignored.

    python benchmarks/rules_cost.py                      # transformers, GL008-GL015, 4 runs each
    python benchmarks/rules_cost.py --corpus timm --runs 6 --rules GL010,GL011

Runs `gradlint check CORPUS --no-cache --select ALL --exit-zero` with `--ignore RULES` and without,
alternately (so that load from other processes spreads over both), and prints each run's user + system
CPU seconds (steadier than wall time on a shared machine), the medians, and their ratio: what the rules
cost on top of today's engine. It never asserts on a time.

Issue 16's target is about time, not rules: the cold check on transformers "stays within 10 % of its time
before this issue". `--baseline GRADLINT` adds that comparison, a third variant: the same check (all its
rules) by another installation, the revision before GL008-GL015 landed on main (5dc7ec0), judged against
1.10:

    git worktree add /tmp/before 5dc7ec0 && python -m venv /tmp/venv-before
    /tmp/venv-before/bin/pip install -e /tmp/before
    python benchmarks/rules_cost.py --baseline /tmp/venv-before/bin/gradlint
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench import gradlint_command  # noqa: E402
from benchmarks.corpus import corpus_dir  # noqa: E402
from benchmarks.measure import run_measured  # noqa: E402

NEW_RULES = "GL008,GL009,GL010,GL011,GL012,GL013,GL014,GL015"
TARGET = 1.10


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="transformers")
    parser.add_argument("--rules", default=NEW_RULES, help="comma-separated codes whose cost is measured")
    parser.add_argument("--runs", type=int, default=4, help="runs of each variant (alternated)")
    parser.add_argument("--jobs", type=int, help="passed to gradlint as --jobs")
    parser.add_argument("--baseline", help="another gradlint executable (an earlier revision), timed too")
    args = parser.parse_args(argv)

    path = corpus_dir(args.corpus)
    options = [str(path), "--no-cache", "--select", "ALL", "--exit-zero"]
    if args.jobs:
        options += ["--jobs", str(args.jobs)]
    check = [*gradlint_command(), "check", *options]
    variants = {"without": [*check, "--ignore", args.rules], "with": check}
    if args.baseline:
        variants["baseline"] = [args.baseline, "check", *options]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as work:
        print(f"{args.corpus}: {path}\nload average at start: {os.getloadavg()[0]:.2f}", flush=True)
        for run in range(args.runs):
            for name, command in variants.items():
                measured = run_measured(command, Path(work), env, Path(work) / "out.txt")
                if measured.returncode != 0:
                    print(f"{name}: exit {measured.returncode}\n{measured.stderr_tail}", file=sys.stderr)
                    return 2
                cpu[name].append(measured.cpu_s)
                print(f"run {run + 1} {name:>8} {args.rules}: cpu {measured.cpu_s:6.2f} s  "
                      f"wall {measured.wall_s:6.2f} s", flush=True)
    before, after = statistics.median(cpu["without"]), statistics.median(cpu["with"])
    ratio = after / before
    print(f"median cpu (user+sys): without {before:.2f} s, with {after:.2f} s; "
          f"what {args.rules} add: x{ratio:.3f}")
    if args.baseline:
        baseline = statistics.median(cpu["baseline"])
        each = ", ".join(f"{w / b:.3f}" for w, b in zip(cpu["with"], cpu["baseline"]))
        print(f"median cpu (user+sys) of the baseline ({args.baseline}): {baseline:.2f} s; with / baseline "
              f"{after / baseline:.3f} (run by run: {each}) "
              f"({'MET' if after / baseline <= TARGET else 'MISSED'}: issue 16's target <= {TARGET:.2f})")
    else:
        print("issue 16's target compares with the revision before it: run with --baseline (see the docstring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
