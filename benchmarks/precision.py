"""Precision of every rule on the precision suite's corpora, from the judged verdicts in tests/verdicts/.

    python benchmarks/precision.py                      # every available corpus
    python benchmarks/precision.py gh:karpathy/nanoGPT pypi:timm
    python benchmarks/precision.py --unjudged           # also print a verdict line to fill in per new finding

GitHub snapshots count when `$GRADLINT_REPOS_DIR` holds them at the pinned commit (see benchmarks/corpus.py).
Per corpus and rule: findings, how many were judged TRUE, FALSE, DEBATABLE, how many are unjudged, TRUE
findings no longer reported (missed), and strict precision, TRUE / findings. It never fails on a number:
tests/test_precision_suite.py does the asserting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/precision.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.corpus import ALL_CORPORA, CorpusUnavailable  # noqa: E402
from benchmarks.suite import KINDS, Comparison, load_to_fix, load_verdicts, precision, scan, verdict_file  # noqa: E402

COLUMNS = ("findings", *KINDS, "unjudged", "missed")


def _row(label: str, code: str, counts: dict) -> str:
    value = precision(counts)
    shown = "-" if value is None else f"{value:.2f}"
    return f"{label:36} {code:6} " + " ".join(f"{counts[c]:>9}" for c in COLUMNS) + f" {shown:>9}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="*", help=f"default: all of {', '.join(ALL_CORPORA)}")
    parser.add_argument("--unjudged", action="store_true", help="print a verdict line per unjudged finding")
    args = parser.parse_args(argv)
    verdicts, to_fix = load_verdicts(), load_to_fix()
    comparisons = []
    for corpus in args.corpora or ALL_CORPORA:
        try:
            comparisons.append(Comparison.of(scan(corpus), verdicts, to_fix))
        except CorpusUnavailable as error:
            print(f"{corpus}: skipped, {str(error).splitlines()[0]}", file=sys.stderr)
    codes = sorted({key[3] for key in verdicts} | {key[2] for c in comparisons for key in c.scan.found})
    print(f"{'corpus':36} {'rule':6} " + " ".join(f"{c:>9}" for c in COLUMNS) + f" {'precision':>9}")
    totals = {code: dict.fromkeys(COLUMNS, 0) for code in codes}
    for comparison in comparisons:
        for code in codes:
            counts = comparison.counts(code)
            for column in COLUMNS:
                totals[code][column] += counts[column]
            if counts["findings"] or counts["missed"]:
                print(_row(comparison.scan.corpus, code, counts))
    for code in codes:
        print(_row(f"all {len(comparisons)} corpora", code, totals[code]))
    if args.unjudged:
        for comparison in comparisons:
            for path, row, code, message in comparison.unjudged:
                print(f"\n# {verdict_file(code)}: {code} {message}\n{comparison.unjudged_line(path, row)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
