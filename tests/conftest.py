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


@pytest.fixture(scope="session")
def verified(tmp_path_factory):
    """`gradlint verify fixtures/NAME ARGS --json --report out/report.html --keep out/patched`, run once a session
    whichever test module asks first (a run costs half a minute): `verified("transformer", "--steps", "24")`
    -> (the finished process, out, digest of the fixture's files before, after)."""
    import hashlib
    import os
    import subprocess

    runs: dict = {}

    def digest(folder: Path) -> dict:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    def run(name: str, *args: str):
        if (name, args) not in runs:
            out = tmp_path_factory.mktemp(name)
            folder = ROOT / "fixtures" / name
            before = digest(folder)
            command = [str(Path(sys.executable).with_name("gradlint")), "verify", f"fixtures/{name}", *args, "--json",
                       "--report", str(out / "report.html"), "--keep", str(out / "patched")]
            env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")  # 2 shared cores: one thread runs fastest
            proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            runs[(name, args)] = (proc, out, before, digest(folder))
        return runs[(name, args)]

    return run
