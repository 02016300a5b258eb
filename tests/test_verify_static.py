"""The torch-free side of `gradlint verify`: what runs in the parent process (arguments, the patched copy,
the checks on a run's record, the table and the HTML page) and the promise that `import gradlint`,
`gradlint check` and `gradlint verify --help` never import torch. Runs without torch installed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradlint.verify import checks, command, html, report
from gradlint.verify.patch import attribute, fix_files, keep

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, env_extra: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def no_torch(tmp_path):
    """A PYTHONPATH on which `import torch` fails, as on a machine without the extra."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named torch (test stand-in)')\n")
    return {"PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"}


def test_static_side_and_verify_parent_never_import_torch():
    proc = run_python("""
        import sys
        import gradlint
        from gradlint.verify import checks, command, html, patch, report, runner
        assert "torch" not in sys.modules, "torch imported"
        assert callable(command.add_arguments) and callable(command.run)
        print("light")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "light" in proc.stdout


def test_verify_help_works_without_torch(no_torch):
    if (ROOT / "gradlint" / "cli.py").exists():
        code = "import sys; from gradlint.cli import main; sys.exit(main(['verify', '--help']))"
    else:
        code = "import sys; from gradlint.verify.command import main; sys.exit(main(['--help']))"
    proc = run_python(code, no_torch)
    assert proc.returncode == 0, proc.stderr
    for option in ("--steps", "--device", "--timeout", "--report", "--json", "--keep", "--unsafe-fixes"):
        assert option in proc.stdout
    assert "Arguments after `--` are the script's own" in proc.stdout


def test_missing_torch_is_one_clear_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "train.py").write_text("print('never runs')\n")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    args = _parse([str(tmp_path)])
    assert command.run(args) == 2
    err = capsys.readouterr().err
    assert "torch is not installed" in err and "pip install 'gradlint[verify]'" in err


def test_torch_that_fails_to_import_in_the_child_is_a_harness_error(no_torch, tmp_path):
    (tmp_path / "train.py").write_text("print('never runs')\n")
    proc = run_python(f"""
        import sys
        from gradlint.verify.command import main
        sys.exit(main([{str(tmp_path)!r}, "--steps", "2"]))
    """, no_torch)
    assert proc.returncode == 2
    assert "torch is not importable" in proc.stdout
    assert "pip install 'gradlint[verify]'" in proc.stdout


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gradlint verify")
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_after_double_dash_belong_to_the_script():
    args = _parse(["train.py", "--steps", "3", "--", "--lr", "1", "--steps", "9", "--"])
    assert args.steps == 3 and args.script_args == ["--lr", "1", "--steps", "9", "--"]
    assert _parse(["train.py"]).script_args == []


def test_double_dash_through_the_real_cli():
    cli = pytest.importorskip("gradlint.cli")
    args = cli.build_parser(with_verify_options=True).parse_args(
        ["verify", "fixtures/clip", "--device", "cpu", "--", "--dtype", "float16", "--device", "cuda"])
    assert args.device == "cpu" and args.script_args == ["--dtype", "float16", "--device", "cuda"]


def test_device_is_checked():
    with pytest.raises(SystemExit):
        _parse(["train.py", "--device", "tpu"])
    assert _parse(["train.py", "--device", "cuda:1"]).device == "cuda:1"


# -- the patched copy -----------------------------------------------------------------------------------

def test_fixed_texts_leave_the_files_and_keep_encodings(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    latin = "# -*- coding: latin-1 -*-\n# d\xe9j\xe0 vu\nimport torch\n\n\ndef f(x):\n    return x / x.norm(dim=-1, keepdim=True)\n"
    (project / "latin.py").write_bytes(latin.encode("latin-1"))
    bom = "import torch\n\n\ndef g(x):\n    return x / x.norm(dim=-1, keepdim=True)  # \u00e9\n"
    (project / "bom.py").write_bytes(b"\xef\xbb\xbf" + bom.encode("utf-8"))
    (project / "clean.py").write_text("x = 1\n")
    before = {p.name: p.read_bytes() for p in project.glob("*.py")}

    paths = [str(project / name) for name in ("bom.py", "clean.py", "latin.py")]
    result = fix_files(paths, cwd=str(tmp_path))
    attribute(result)
    assert {p.name: p.read_bytes() for p in project.glob("*.py")} == before  # only read
    assert result.codes.get("GL001") == 2 and result.fixed == 2
    assert sorted(f.path for f in result.files) == ["project/bom.py", "project/latin.py"]
    assert result.considered == ["project/bom.py", "project/clean.py", "project/latin.py"]
    assert set(result.sources()) == {str(project / "bom.py"), str(project / "latin.py")}
    diff = next(f.diff for f in result.files if f.path == "project/latin.py")
    assert diff.startswith("--- a/project/latin.py\n+++ b/project/latin.py\n")
    assert "-    return x / x.norm(dim=-1, keepdim=True)" in diff

    written = keep(result, tmp_path / "kept", str(project))
    assert sorted(p.name for p in written) == ["bom.py", "latin.py"]
    fixed_latin = (tmp_path / "kept" / "latin.py").read_bytes()
    assert "d\xe9j\xe0".encode("latin-1") in fixed_latin and b"normalize(" in fixed_latin
    fixed_bom = (tmp_path / "kept" / "bom.py").read_bytes()
    assert fixed_bom.startswith(b"\xef\xbb\xbf") and fixed_bom.count(b"\xef\xbb\xbf") == 1


# -- checks on records, the table, the page ---------------------------------------------------------------

def record(rows, **extra):
    base = {"status": "stopped", "steps": len(rows), "seconds": 1.0, "layers": ["a", "b"], "rows": rows,
            "first_nonfinite": None, "eval_mode": [], "train_mode": [], "clip_sites": [], "activations": [],
            "thresholds": {"vanishing": 1e-7, "exploding": 100.0, "dead_fraction": 0.5}}
    base.update(extra)
    return base


def row(step, a, b, clips=(), loss=1.0, skipped=False, fwd_nan=False):
    total = None if a is None else ("nan" if isinstance(a, str) else (a * a + b * b) ** 0.5)
    return {"step": step, "norms": [a, b], "total": total, "loss": loss, "fwd_nan": fwd_nan,
            "clips": list(clips), "skipped": skipped}


def by_key(rec):
    return {c.key: c for c in checks.evaluate(rec)}


def test_exploding_vanishing_and_clipping_from_a_record():
    rec = record([row(1, 1.0, 1e-9), row(2, 150.0, 1e-9), row(3, 2.0, 1e-3)])
    c = by_key(rec)
    assert c["exploding"].status == "fail" and "max 150 in a at step 2" in c["exploding"].summary
    assert c["vanishing"].status == "warn" and c["vanishing"].details == ["b: median 1.00e-09"]
    assert c["clipping"].status == "warn" and c["clipping"].summary == "no clipping in 3 of 3 steps"
    assert not checks.healthy(list(c.values()))

    clip = {"before": 5.0, "max_norm": 1.0, "scale": None, "site": "t.py:9"}
    c = by_key(record([row(1, 0.6, 0.8, [clip]), row(2, 0.6, 0.8, [clip])]))
    assert c["clipping"].status == "ok" and c["clipping"].summary == "clipped in 2 of 2 steps (max_norm 1, cut 2)"
    assert c["exploding"].status == "ok" and checks.healthy(list(c.values()))

    scaled = {"before": 65536.0, "max_norm": 1.0, "scale": 65536.0, "site": "t.py:9"}
    c = by_key(record([row(1, 1e-5, 1e-5, [scaled])],
                      clip_sites=[{"site": {"file": "t.py", "line": 9}, "count": 1, "scaled": 1}]))
    assert c["clipping"].status == "fail" and "scale 6.55e+04" in c["clipping"].summary
    assert c["clipping"].details[0] == "at t.py:9: call scaler.unscale_(optimizer) before clipping"


def test_nonfinite_from_a_record_with_and_without_a_trace():
    rows = [row(1, 1.0, 1.0), row(2, "nan", "nan", loss="nan", fwd_nan=True)]
    first = {"step": 2, "seen_in": "model output", "layers": ["a", "b"], "n_layers": 2}
    c = by_key(record(rows, first_nonfinite=first))["nonfinite"]
    assert c.status == "fail" and c.summary == "NaN/Inf at step 2, first seen in the model output"
    trace = {"phase": "forward", "kind": "nan", "op": "div", "module": "enc.pool", "module_class": "Pool",
             "site": {"file": "m.py", "line": 7, "function": "forward", "code": "x = x / n"}, "note": "from finite inputs"}
    c = by_key(record(rows, first_nonfinite=first, trace=trace))["nonfinite"]
    assert c.summary == "NaN at step 2, forward: `div` in enc.pool (Pool) at m.py:7"
    assert c.code == "x = x / n" and c.details[0] == "from finite inputs"
    skipped = [row(1, None, None, skipped=True), row(2, None, None, skipped=True), row(3, 1.0, 1.0)]
    assert by_key(record(skipped))["nonfinite"].status == "fail"  # the scaler skipped most steps


def test_table_puts_both_runs_side_by_side():
    original = checks.evaluate(record([row(1, 150.0, 1.0)]))
    patched = checks.evaluate(record([row(1, 1.0, 1.0)]))
    text = report.table(original, patched, width=120)
    lines = text.splitlines()
    assert lines[0].split() == ["check", "original", "patched"]
    exploding = next(line for line in lines if line.startswith("exploding gradients"))
    assert "FAIL" in exploding and exploding.index("FAIL") < exploding.index("ok ")
    assert all(len(line) <= 120 for line in lines)
    verdict = report.verdict(original, patched, True, 0)
    assert verdict["fixed"] == ["exploding gradients"] and verdict["warnings"] == ["gradient clipping"]
    assert verdict["lines"] == ["fixed by the patch: exploding gradients",
                                "verdict: the patched run passes with 1 warning (gradient clipping): no check failed"]


def test_html_page_is_self_contained_and_survives_nan():
    o = record([row(1, 1.0, 2.0), row(2, "nan", "nan", loss="nan", fwd_nan=True)],
               first_nonfinite={"step": 2, "seen_in": "loss", "layers": [], "n_layers": 0})
    p = record([row(1, 1.0, 2.0), row(2, 0.5, 0.1)])
    result = command._compare(_args(), "proj/train.py", _one_file_patch(), o, dict(p, served=["proj/train.py"]), {})
    page = html.render(result)
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert page.count("<svg") >= 5 and "non-finite" in page
    skipped = command._compare(_args(), "proj/train.py", _one_file_patch(), o,
                               {"status": "skipped", "reason": "not run: no fix"}, {})
    assert skipped["exit_code"] == 2 and "not run: no fix" in html.render(skipped)


def _args(**kw):
    return argparse.Namespace(**{"path": "proj", "module": None, "steps": 2, "device": "cpu", "seed": None, **kw})


def _one_file_patch():
    from gradlint.verify.patch import FilePatch, PatchResult

    return PatchResult(files=[FilePatch("proj/train.py", "proj/train.py", 1, {"GL001": 1}, "", "x = 1\n")])


def test_a_clip_that_never_cut_is_not_claimed_as_a_fix():
    original = checks.evaluate(record([row(1, 0.1, 0.1), row(2, 0.1, 0.1)]))
    small = {"before": 0.14, "max_norm": 1.0, "scale": None, "site": "t.py:9"}
    patched = checks.evaluate(record([row(1, 0.1, 0.1, [small]), row(2, 0.1, 0.1, [small])]))
    assert {c.key: c.status for c in patched}["clipping"] == "ok"
    verdict = report.verdict(original, patched, True, 0)
    assert verdict["fixed"] == []
    assert verdict["lines"][0].startswith("gradient clipping: added by the patch, but it never cut in this run")
    identical = report.verdict(checks.evaluate(record([row(1, 150.0, 1.0)])), checks.evaluate(record([row(1, 1.0, 1.0)])),
                               True, 0, notes=("the two runs are identical",))
    assert identical["fixed"] == [] and identical["lines"][0] == "the two runs are identical"


def test_constant_loss_and_zero_gradients_fail_and_a_diverging_loss_fails():
    flat = checks.evaluate(record([row(i, 0.0, 0.0, loss=0.0) for i in range(1, 6)]))
    found = {c.key: c for c in flat}
    assert found["gradient_flow"].status == "fail" and found["loss"].status == "fail"
    assert not checks.healthy(flat)
    rising = [5.7, 213.0, 293.0, 554.0, 756.0, 835.0, 791.0, 745.0, 768.0, 654.0, 635.0, 624.0]
    found = {c.key: c for c in checks.evaluate(record([row(i, 1.0, 1.0, loss=v) for i, v in enumerate(rising, 1)]))}
    assert found["loss"].status == "fail" and found["loss"].data["optimizer"]["diverging"]
    noisy = [2.3, 2.6, 2.1, 2.4, 2.2, 2.5, 2.0, 2.3, 2.2, 2.4, 1.9, 2.1]  # noise, no trend
    found = {c.key: c for c in checks.evaluate(record([row(i, 1.0, 1.0, loss=v) for i, v in enumerate(noisy, 1)]))}
    assert found["loss"].status == "ok"
