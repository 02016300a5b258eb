"""The language server: the Language Server Protocol over stdio, for editors (see the README).

Started as `python -m gradlint.server` (the command line's `gradlint server` will call `main`).

Built on pygls and lsprotocol, installed by the `server` extra (`pip install 'gradlint[server]'`) so that
the command line and the pre-commit hooks stay light.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        from .app import serve
    except ImportError as error:
        print(f"error: `gradlint server` needs the server extra (pip install 'gradlint[server]'): {error}",
              file=sys.stderr)
        return 2
    serve()
    return 0
