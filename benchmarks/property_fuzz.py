"""More examples of the property test: generated Python with the rules' defects spliced in.

    python benchmarks/property_fuzz.py [--examples 500]

Runs tests/test_property.py with GRADLINT_PROPERTY_EXAMPLES set (CI runs a handful) and prints how long
it took; a failure prints the generated source that broke a promise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    args = parser.parse_args(argv)
    env = {**os.environ, "GRADLINT_PROPERTY_EXAMPLES": str(args.examples)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_property.py::test_generated_sources_with_defects_spliced_in"],
                          cwd=ROOT, env=env)
    print(f"{args.examples} generated files in {time.perf_counter() - start:.0f} s: "
          f"{'all promises kept' if done.returncode == 0 else 'FAILED'}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
