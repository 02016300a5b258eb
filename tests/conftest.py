import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `benchmarks.corpus` is shared by tests and benchmarks

import pytest  # noqa: E402


@pytest.fixture
def gradlint(monkeypatch, capsys):
    """Run the CLI in-process in a directory: `gradlint(tmp_path, "check", ".")` -> (exit, stdout, stderr).

    Findings come one a line (`path:row:col: CODE message`, the concise format, as GRADLINT_OUTPUT_FORMAT
    can ask): most tests read them. The default format (full) is tested by unsetting it."""
    from gradlint.cli import main

    monkeypatch.setenv("GRADLINT_OUTPUT_FORMAT", "concise")

    def run(cwd, *args):
        monkeypatch.chdir(cwd)
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run
