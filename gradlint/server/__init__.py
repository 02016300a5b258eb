"""The language server: the Language Server Protocol over stdio, for editors (see the README).

Started as `gradlint server` or `python -m gradlint.server`.

Built on pygls and lsprotocol, installed by the `server` extra (`pip install 'gradlint[server]'`) so that
the command line and the pre-commit hooks stay light.
"""

from __future__ import annotations

import importlib.util
import sys

NEEDS = ("pygls", "lsprotocol")


def main() -> int:
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: `gradlint server` needs {' and '.join(missing)}, which the server extra installs: "
              "pip install 'gradlint[server]'", file=sys.stderr)
        return 2
    from .app import serve

    serve()
    return 0
