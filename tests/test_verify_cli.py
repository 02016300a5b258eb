"""`gradlint verify` as a user runs it: on the two fixtures, and on scripts that crash, hang, never step,
read their own arguments, or make NaN only in the backward pass.

Each verify run starts subprocesses that import torch, so every command runs once (module-scoped
fixtures) and several tests read its output.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CUDA = False
try:
    import torch

    CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - importorskip above
    pass


def _cli() -> list[str]:
    """The real `gradlint` command once the CLI exists; the verify module's own entry point until then."""
    script = Path(sys.executable).with_name("gradlint")
    if (ROOT / "gradlint" / "cli.py").exists() and script.exists():
        return [str(script), "verify"]
    return [sys.executable, "-m", "gradlint.verify.command"]


def verify(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")  # 2 shared cores: one thread runs fastest
    return subprocess.run([*_cli(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _rules() -> set[str]:
    from gradlint.registry import all_rules

    return {rule.code for rule in all_rules()}


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def _check(run: dict, key: str) -> dict:
    return next(c for c in run["checks"] if c["key"] == key)


# -- the fixtures ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def transformer(verified):
    # GL005's clip is an unsafe fix (clipping changes healthy steps too): verify shows what it changes.
    return verified("transformer", "--steps", "24", "--device", "cpu", "--unsafe-fixes")  # shared with test_verify_report


@pytest.fixture(scope="module")
def transformer_text():
    return verify("fixtures/transformer", "--steps", "12", "--device", "cpu", "--no-pinpoint", "--unsafe-fixes")


def test_transformer_nan_traced_to_its_line_in_the_original_and_gone_in_the_patched_run(transformer):
    proc, _, _, _ = transformer
    assert proc.returncode in (0, 1), proc.stderr
    result = json.loads(proc.stdout)
    original, patched = result["original"], result["patched"]
    trace = original["trace"]
    assert trace["phase"] == "forward" and trace["kind"] == "nan"
    assert trace["module"] == "spatial" and trace["module_class"] == "SpatialEncoder"
    assert trace["site"]["file"] == "fixtures/transformer/model.py"
    assert trace["site"]["line"] == _line_of(FIXTURES / "transformer" / "model.py", "x = x / x.norm(")
    assert _check(original, "nonfinite")["status"] == "fail"
    assert _check(patched, "nonfinite")["status"] == "ok"
    assert patched["first_nonfinite"] is None


def test_transformer_explosion_without_clipping_and_its_fix(transformer):
    result = json.loads(transformer[0].stdout)
    original, patched = result["original"], result["patched"]
    assert _check(original, "exploding")["status"] == "fail"
    assert _check(original, "clipping")["status"] == "warn"
    if "GL005" not in _rules():
        pytest.skip("GL005 (step without clipping) is not implemented yet")
    assert _check(patched, "clipping")["status"] == "ok"
    assert _check(patched, "exploding")["status"] == "ok"


def test_transformer_eval_mode_check_flips(transformer):
    result = json.loads(transformer[0].stdout)
    original, patched = result["original"], result["patched"]
    eval_mode = _check(original, "eval_mode")
    assert eval_mode["status"] == "fail"
    line = _line_of(FIXTURES / "transformer" / "train.py", "total += masked_mse(model(")
    assert f"fixtures/transformer/train.py:{line}" in eval_mode["summary"]
    if not {"GL004", "GL006"} <= _rules():
        pytest.skip("GL004/GL006 are not implemented yet")
    assert _check(patched, "eval_mode")["status"] == "ok"
    assert _check(patched, "train_mode")["status"] == "ok"
    assert result["exit_code"] == 0 and result["healthy"]


def test_verify_never_touches_the_users_tree(transformer):
    _, out, before, after = transformer
    assert before == after
    assert not list((FIXTURES / "transformer").rglob("__pycache__"))
    kept = out / "patched"
    assert "F.normalize" in (kept / "model.py").read_text() or "normalize(" in (kept / "model.py").read_text()
    assert (kept / "model.py").read_text() != (FIXTURES / "transformer" / "model.py").read_text()


def test_terminal_table_side_by_side(transformer_text):
    proc = transformer_text
    assert proc.returncode in (0, 1), proc.stderr
    out = proc.stdout
    assert re.search(r"^check\s+original\s+patched", out, re.M)
    row = next(line for line in out.splitlines() if line.startswith("non-finite values"))
    assert "FAIL" in row and re.search(r"ok\s+none in 12 steps", row)
    assert "verdict:" in out
    assert "original" in proc.stderr and "patched" in proc.stderr  # progress, one line per run


@pytest.fixture(scope="module")
def clip(verified):
    return verified("clip", "--steps", "20", "--device", "cpu")[0]  # shared with test_verify_report


def test_clip_nan_in_the_free_loss_function_is_traced_to_its_line(clip):
    assert clip.returncode in (0, 1), clip.stderr
    result = json.loads(clip.stdout)
    trace = result["original"]["trace"]
    assert trace["phase"] == "forward" and trace["module"] is None  # a free function, not a module
    assert trace["site"]["file"] == "fixtures/clip/loss.py" and trace["site"]["function"] == "similarity6"
    source = (FIXTURES / "clip" / "loss.py").read_text().splitlines()
    assert re.fullmatch(r"\s*C\d = C\d / C\d\.norm\(dim=-1, keepdim=True\)", source[trace["site"]["line"] - 1])
    assert _check(result["patched"], "nonfinite")["status"] == "ok"


def test_clip_scaled_clipping_and_train_mode_flip(clip):
    result = json.loads(clip.stdout)
    original, patched = result["original"], result["patched"]
    clipping = _check(original, "clipping")
    assert clipping["status"] == "fail" and "scaled" in clipping["summary"]
    assert _check(original, "train_mode")["status"] == "fail"
    rules = _rules()
    if "GL007" in rules:
        assert _check(patched, "clipping")["status"] == "ok"
    if "GL006" in rules:
        assert _check(patched, "train_mode")["status"] == "ok"
    if {"GL001", "GL006", "GL007"} <= rules:
        assert result["exit_code"] == 0


# -- bad input --------------------------------------------------------------------------------------------

SCRIPTS = {
    "crash": '''
        """Crashes at the second step, for a reason no fix touches."""
        import torch

        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(10):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step == 1:
                raise RuntimeError("the data loader lost its files")
    ''',
    "hang": '''
        """Trains one step, then hangs."""
        import time

        import torch

        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        while True:
            time.sleep(0.5)
    ''',
    "nostep": '''
        """Inference only: never calls an optimizer step."""
        import torch

        model = torch.nn.Linear(4, 1)
        model.eval()
        with torch.no_grad():
            print(model(torch.randn(8, 4)).sum().item())
    ''',
    "args": '''
        """Reads its own arguments, like any script."""
        import argparse
        import sys

        import torch

        p = argparse.ArgumentParser()
        p.add_argument("--width", type=int, required=True)
        p.add_argument("--device", default="nowhere")
        args = p.parse_args()
        print(f"ARGV {sys.argv[1:]} WIDTH {args.width} DEVICE {args.device} NAME {__name__}", flush=True)
        model = torch.nn.Linear(args.width, 1).to(args.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        for _ in range(5):
            loss = model(torch.randn(8, args.width, device=args.device)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    ''',
    "nan_assert": '''
        """Asserts the loss is finite; a zero row makes it NaN at step 3: the crash is the defect."""
        import torch

        torch.manual_seed(0)
        model = torch.nn.Linear(4, 4)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(6):
            x = torch.randn(8, 4)
            if step == 2:
                x[3] = 0
            x = x / x.norm(dim=-1, keepdim=True)
            loss = model(x).pow(2).mean()
            assert torch.isfinite(loss), f"loss is {loss.item()} at step {step + 1}"
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    ''',
    "sqrt_backward": '''
        """The forward stays finite, the gradient does not: eps added outside the sqrt."""
        import torch
        from torch import nn


        def rms_normalize(x):
            return x / (torch.sqrt((x * x).sum(-1, keepdim=True)) + 1e-6)


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = nn.Linear(4, 4, bias=False)
                self.head = nn.Linear(4, 1)

            def forward(self, x):
                return self.head(rms_normalize(self.proj(x)))


        torch.manual_seed(0)
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for step in range(8):
            x = torch.randn(8, 4)
            if step == 3:
                x[0] = 0
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    ''',
}


@pytest.fixture
def project(tmp_path):
    def make(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "train.py").write_text(textwrap.dedent(SCRIPTS[name]).lstrip())
        return folder
    return make


def test_missing_script():
    proc = verify("no/such/train.py")
    assert proc.returncode == 2
    assert "no such file or directory" in proc.stderr


def test_folder_without_a_training_script(tmp_path):
    proc = verify(tmp_path)
    assert proc.returncode == 2
    assert "train.py" in proc.stderr


def test_crash_shows_the_traceback_and_exits_2(project):
    folder = project("crash")
    proc = verify(folder / "train.py", "--steps", "5", cwd=folder.parent)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "original run crashed" in proc.stdout
    assert "Traceback (most recent call last)" in proc.stdout
    assert 'crash/train.py", line 13' in proc.stdout and "RuntimeError: the data loader lost its files" in proc.stdout
    assert "gradlint/verify" not in proc.stdout.split("original run crashed")[1].split("\n\n")[0]
    assert "verdict: none, not run: the original run crashed and no fix applies" in proc.stdout


def test_crash_that_is_the_defect_still_runs_the_patched_copy(project):
    folder = project("nan_assert")
    proc = verify(folder, "--steps", "6", "--json", cwd=folder.parent)
    result = json.loads(proc.stdout)
    assert result["original"]["status"] == "crashed"
    assert "AssertionError" in result["original"]["error"]["traceback"]
    trace = result["original"]["trace"]
    assert trace["site"]["line"] == _line_of(folder / "train.py", "x = x / x.norm(") and trace["module"] is None
    assert result["patched"]["status"] in ("finished", "stopped") and result["patched"]["healthy"]
    assert proc.returncode == 0


def test_hang_is_killed_at_the_timeout(project):
    folder = project("hang")
    proc = verify(folder, "--steps", "5", "--timeout", "6", cwd=folder.parent)
    assert proc.returncode == 2
    assert re.search(r"killed after 6s at step [01] of 5", proc.stdout)  # step 0 on a loaded machine


def test_script_without_an_optimizer_step(project):
    folder = project("nostep")
    proc = verify(folder, "--steps", "5", cwd=folder.parent)
    assert proc.returncode == 2
    assert "without a training step" in proc.stdout and "never trained" in proc.stdout


def test_script_arguments_pass_through_and_device_reaches_argparse(project):
    folder = project("args")
    proc = verify(folder / "train.py", "--steps", "5", "--device", "cpu", "--json", "--", "--width", "3",
                  cwd=folder.parent)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    out = result["original"]["stdout_tail"]
    assert "ARGV ['--width', '3'] WIDTH 3 DEVICE cpu NAME __main__" in out
    assert result["original"]["steps"] == 5 and result["original"]["status"] in ("finished", "stopped")


def test_backward_only_nan_is_traced_to_the_sqrt(project):
    folder = project("sqrt_backward")
    # Moving eps inside the sqrt changes results slightly: an unsafe fix, which verify applies when asked.
    proc = verify(folder, "--steps", "8", "--json", "--unsafe-fixes", cwd=folder.parent)
    result = json.loads(proc.stdout)
    trace = result["original"]["trace"]
    assert trace["phase"] == "backward" and trace["op"] == "sqrt"
    assert trace["site"]["line"] == _line_of(folder / "train.py", "torch.sqrt(")
    assert trace["site"]["function"] == "rms_normalize"
    assert result["original"]["first_nonfinite"]["step"] == 4
    assert result["original"]["first_nonfinite"]["seen_in"] == "gradients"  # the forward was finite
    assert _check(result["patched"], "nonfinite")["status"] == "ok"


# -- CUDA (the lead runs these where a GPU is lent) ---------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("fixture", ["transformer", "clip"])
def test_fixture_on_cuda(fixture):
    proc = verify(f"fixtures/{fixture}", "--steps", "20", "--device", "cuda", "--json")
    result = json.loads(proc.stdout)
    assert result["original"]["device"].startswith("cuda")
    assert result["original"]["trace"]["site"]["file"].startswith(f"fixtures/{fixture}/")
    assert _check(result["patched"], "nonfinite")["status"] == "ok"


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_clip_float16_on_cuda_needs_an_eps_chosen_for_the_dtype():
    proc = verify("fixtures/clip", "--steps", "20", "--device", "cuda", "--json", "--", "--dtype", "float16")
    result = json.loads(proc.stdout)
    assert result["original"]["first_nonfinite"] is not None
    assert result["original"]["trace"]["site"]["file"] == "fixtures/clip/loss.py"
    assert _check(result["patched"], "nonfinite")["status"] == "ok"  # eps=1e-6 survives float16
    for run in ("original", "patched"):  # GradScaler skips: clipped steps are counted among the taken ones
        clipping = _check(result[run], "clipping")["summary"]
        counts = re.match(r"clipped in (\d+) of (\d+) steps", clipping)
        assert counts is None or int(counts[1]) <= int(counts[2]), clipping  # was "clipped in 30 of 21 steps"
