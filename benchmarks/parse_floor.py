"""The LibCST parse floor: read and `libcst.parse_module` every .py file under PATH, in one process.

Run as a whole process by `bench.py`, so its time includes the interpreter and libcst import, like the
tools it is compared with. Prints `files parsed, failures`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import libcst


def main(root: str) -> None:
    parsed = failed = 0
    for path in sorted(Path(root).rglob("*.py")):
        try:
            libcst.parse_module(path.read_bytes())
            parsed += 1
        except Exception:  # a syntax LibCST does not know: counted, not fatal
            failed += 1
    print(f"{parsed} parsed, {failed} failed")


if __name__ == "__main__":
    main(sys.argv[1])
