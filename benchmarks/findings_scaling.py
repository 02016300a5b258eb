"""Cost per finding: text, JSON and `fix --write` times for one file with 100, 1 000 and 10 000 findings.

    python benchmarks/findings_scaling.py [--counts 100,1000,10000] [--timeout 600]

Each file holds N small functions of ~400 bytes, each with one fixable GL001 (10 000 findings: a 4 MB
file). Every run is a fresh `gradlint` process with `--no-cache`, in a scratch folder. The cost should
grow with N, not N²: the table prints seconds per 1 000 findings, and JSON's ratio to text (the target
is at most 3×). Nothing is asserted: timings go to the reader.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FUNCTION = '''

def embed_{i}(x, scale):
    """Project batch {i} onto the unit sphere before the contrastive head (padding so that the file is
    about as dense as real training code: a docstring, a comment, a few statements per finding)."""
    # Keep the same shape as the encoder output; the norm is taken over the feature dimension.
    h = x * scale + {i}
    h = h - h.mean(dim=0)
    return h / h.norm(dim=-1, keepdim=True)
'''


def source(count: int) -> str:
    return "import torch\n" + "".join(FUNCTION.format(i=i) for i in range(count))


def timed(command: list[str], cwd: Path, timeout: float) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return float("inf"), "timeout"
    elapsed = time.perf_counter() - start
    return elapsed, f"exit {done.returncode}, {len(done.stdout) // 1024} KiB out"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,1000,10000")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    gradlint = [sys.executable, "-m", "gradlint"]
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="gradlint-scaling-"))
    try:
        for count in (int(c) for c in args.counts.split(",")):
            folder = scratch / str(count)
            folder.mkdir()
            (folder / "many.py").write_text(source(count))
            size = (folder / "many.py").stat().st_size
            text_s, text_note = timed([*gradlint, "check", "--no-cache", "many.py"], folder, args.timeout)
            json_s, json_note = timed([*gradlint, "check", "--no-cache", "--output-format", "json", "many.py"],
                                      folder, args.timeout)
            fix_s, fix_note = timed([*gradlint, "fix", "--write", "--no-cache", "many.py"], folder, args.timeout)
            left = (folder / "many.py").read_text().count("keepdim=True)\n")
            rows.append((count, size, text_s, json_s, fix_s, left))
            print(f"  {count:>6} findings ({size / 1e6:.2f} MB): text {text_s:.2f}s ({text_note}), "
                  f"json {json_s:.2f}s ({json_note}), fix {fix_s:.2f}s ({fix_note}, {left} left)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(f"{'findings':>9} {'MB':>6} {'text s':>8} {'json s':>8} {'fix s':>8} {'json/text':>9} "
          f"{'text s/1k':>9} {'json s/1k':>9} {'fix s/1k':>9}")
    for count, size, text_s, json_s, fix_s, _ in rows:
        per = 1000 / count
        print(f"{count:>9} {size / 1e6:>6.2f} {text_s:>8.2f} {json_s:>8.2f} {fix_s:>8.2f} {json_s / text_s:>9.2f} "
              f"{text_s * per:>9.2f} {json_s * per:>9.2f} {fix_s * per:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
