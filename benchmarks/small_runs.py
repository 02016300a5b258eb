"""Small runs, as a pre-commit hook makes them: `gradlint check --no-cache` on 1, 3 and 7 fixture files,
linted in gradlint's own process (the default for a few small files) and in a forked worker (what every
run did before), timed as whole processes (the interpreter's start included) and by the run alone.

    python benchmarks/small_runs.py [--runs 15]

Prints the medians of the wall time and of the CPU time (user + system, the worker's included) of each:
CPU time is steadier on a shared machine. Both ways run the same code: the worker way sets
`workers.IN_PROCESS_FILES = 0` before the run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.measure import run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FILES = ["transformer/model.py", "transformer/train.py", "clip/loss.py", "clip/model.py", "clip/train.py",
         "clip/data.py", "transformer/data.py"]
PROGRAM = """
import sys, time
from pathlib import Path
import gradlint.workers as workers
if sys.argv[1] == "worker":
    workers.IN_PROCESS_FILES = 0
from gradlint.lint_command import run_lint
from gradlint.cli import build_parser
args = build_parser(False).parse_args(["check", "--no-cache", "-q", "--output-format", "concise", *sys.argv[2:]])
import contextlib, io, os
started, cpu = time.perf_counter(), os.times()
with contextlib.redirect_stdout(io.StringIO()):
    run_lint(args)
after = os.times()
spent = sum(after[:4]) - sum(cpu[:4])  # user + system, this process and the workers it waited for
print(time.perf_counter() - started, spent, file=sys.stderr)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name in FILES:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / "fixtures" / name, work / name)
        print(f"{'files':>5} {'way':>10} {'process wall ms':>16} {'process cpu ms':>15} {'run wall ms':>12} "
              f"{'run cpu ms':>11}")
        for count in (1, 3, 7):
            results: dict[str, list] = {"in-process": [], "worker": []}
            for _ in range(args.runs):
                for way in results:  # interleaved, so that a busy moment hits both ways
                    measured = run_measured([sys.executable, "-c", PROGRAM, way, *FILES[:count]], work)
                    run_wall, run_cpu = map(float, measured.stderr_tail.strip().splitlines()[-1].split())
                    results[way].append((measured.wall_s, measured.cpu_s, run_wall, run_cpu))
            for way, rows in results.items():
                medians = [statistics.median(row[i] for row in rows) * 1000 for i in range(4)]
                print(f"{count:>5} {way:>10} {medians[0]:>16.1f} {medians[1]:>15.1f} {medians[2]:>12.1f} "
                      f"{medians[3]:>11.1f}")


if __name__ == "__main__":
    main()
