"""The static side never imports torch (pre-commit installs it alone), and a warm run never loads libcst."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent("""
    import importlib.abc, sys

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError("the static side imported " + name)

    sys.meta_path.insert(0, Forbid())
    from gradlint.cli import main
    codes = [main(args) for args in {runs!r}]
    print("EXIT", codes, "LIBCST", "libcst" in sys.modules)
""")


def probe(cwd: Path, runs: list, blocked: set) -> str:
    script = PROBE.format(blocked=sorted(blocked), runs=runs)
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_check_and_fix_never_import_torch(tmp_path):
    (tmp_path / "train.py").write_text("import torch\nz = x / x.norm(dim=-1)\n")
    runs = [["check", "--no-cache", "."], ["fix", "--write", "."], ["check", "--no-cache", str(ROOT / "fixtures")],
            ["rule", "--all"]]
    last = probe(tmp_path, runs, {"torch", "numpy"})
    assert last.startswith("EXIT [1, 0, 1, 0]")


def test_warm_run_reads_the_cache_without_libcst(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.gradlint]\n")
    for i in range(5):
        (tmp_path / f"m{i}.py").write_text("z = x / x.norm(dim=-1)\n" if i % 2 else "z = 1\n")
    assert probe(tmp_path, [["check", "."]], set()) == "EXIT [1] LIBCST True"  # cold: fills the cache
    assert probe(tmp_path, [["check", "."]], {"libcst", "torch"}) == "EXIT [1] LIBCST False"  # warm
