"""`gradlint verify` end to end on small scripts that reproduce what real training scripts did to it: a run
that learns nothing, a diverging loss, a patch that cannot have changed the run, a crash before any forward,
`torch.save(model)` after training, a project run as `python -m pkg.train` or with a package on PYTHONPATH,
a config without `--device`, a hand-written update, and the inputs that must never run (a data file, a
forgotten `--`).

The defects are on purpose: `# noqa` keeps `gradlint fix --write .` on this repository from fixing them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


def verify(*args: str, cwd: Path, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("gradlint")
    cli = [str(script), "verify"] if script.exists() else [sys.executable, "-m", "gradlint.verify.command"]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1", **(env or {}))
    return subprocess.run([*cli, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def checks(run: dict) -> dict[str, dict]:
    return {c["key"]: c for c in run["checks"]}


def result_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return json.loads(proc.stdout)


# -- verdicts that must not reassure -----------------------------------------------------------------------

ZERO_GRADIENTS = '''
    """The DDP tutorial's single_gpu.py: cross_entropy on a (B, 1) output is 0, and so is every gradient."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = torch.nn.Linear(20, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(40):
        source, targets = torch.rand(32, 20), torch.rand(32, 1)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(source), targets)
        loss.backward()
        optimizer.step()
'''


@pytest.fixture(scope="module")
def zero_gradients(tmp_path_factory):
    folder = write(tmp_path_factory.mktemp("zero"), {"single_gpu.py": ZERO_GRADIENTS})
    return verify("single_gpu.py", "--steps", "12", "--json", cwd=folder)


def test_all_zero_gradients_and_a_constant_loss_fail(zero_gradients):
    result = result_of(zero_gradients)
    assert zero_gradients.returncode == 1 and result["exit_code"] == 1 and not result["healthy"]
    decisive = result["patched"] if result["patched"]["status"] != "skipped" else result["original"]
    found = checks(decisive)
    assert found["gradient_flow"]["status"] == "fail" and "exactly 0 in all 12 steps" in found["gradient_flow"]["summary"]
    assert found["loss"]["status"] == "fail" and "never changed" in found["loss"]["summary"]
    assert result["verdict"]["status"] == "unhealthy" and result["verdict"]["fixed"] == []
    if result["patch"]["files"]:  # a fix applied (clipping), but the runs cannot differ: said, not claimed
        assert any("identical" in note for note in result["verdict"]["notes"])


def test_json_is_versioned_and_machine_readable(zero_gradients):
    import gradlint

    result = result_of(zero_gradients)
    assert result["schema"] == 2 and result["gradlint"] == gradlint.__version__
    assert result["seed"] == 0 and result["device"]["used"] == "cpu"
    assert result["verdict"]["exit_code"] == result["exit_code"] == 1
    assert result["verdict"]["lines"][-1].startswith("verdict: ")
    for run in ("original", "patched"):
        for check in result[run]["checks"]:
            assert set(check) >= {"key", "status", "summary", "details", "data"}
            assert not check["summary"].startswith(" ") and not any(d.startswith(" ") for d in check["details"])
    flow = checks(result["original"])["gradient_flow"]["data"]
    assert flow == {"steps": 12, "zero_steps": 12}


DIVERGING = '''
    """AdamW at a learning rate meant for plain SGD on clipped gradients: the loss runs away."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=20.0)
    x, y = torch.randn(256, 8), torch.randn(256, 1)
    for step in range(60):
        batch = torch.randint(0, 256, (32,))
        loss = (model(x[batch]) - y[batch]).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
'''


def test_a_diverging_loss_fails(tmp_path):
    folder = write(tmp_path, {"train.py": DIVERGING})
    proc = verify("train.py", "--steps", "30", "--json", cwd=folder)
    result = result_of(proc)
    loss = checks(result["original"])["loss"]
    assert loss["status"] == "fail" and loss["summary"].startswith("diverging")
    assert "risen by more than the early level" in loss["details"][0]
    assert proc.returncode == 1 and "loss" in result["verdict"]["failing"]


CACHED = {
    "train.py": '''
        """Builds its features once (importing prep.py, which has a fixable defect), then reads the cache."""
        import os

        import torch

        if not os.path.exists("features.pt"):
            import prep

            torch.save(prep.features(torch.randn(64, 8)), "features.pt")
        x = torch.load("features.pt")
        model = torch.nn.Linear(8, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(10):
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    ''',
    "prep.py": '''
        def features(x):
            return x / x.norm(dim=-1, keepdim=True)
    ''',
}


def test_a_patch_the_run_never_imported_is_said_not_claimed(tmp_path):
    folder = write(tmp_path, CACHED)
    proc = verify("train.py", "--steps", "8", "--json", cwd=folder)
    result = result_of(proc)
    assert (folder / "features.pt").exists()  # it ran where the user runs: its cache is there
    assert [f["path"] for f in result["patch"]["files"]] == ["prep.py"]
    assert "prep.py" in result["original"]["project_files"] and "prep.py" not in result["patched"]["served"]
    assert result["verdict"]["notes"] == ["the patched run never imported a fixed file: the patch cannot have "
                                          "changed it"]
    assert result["verdict"]["fixed"] == []


CRASH_BEFORE_FORWARD = '''
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rows = open("data/train.csv").read().splitlines()
'''


def test_a_crash_before_any_forward_checks_nothing(tmp_path):
    folder = write(tmp_path, {"train.py": CRASH_BEFORE_FORWARD})
    proc = verify("train.py", "--steps", "5", cwd=folder)
    assert proc.returncode == 2
    rows = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
    for title in ("eval mode", "train mode", "dead units"):
        assert "n/a" in rows[title] and " ok " not in rows[title], rows[title]
    assert "FileNotFoundError" in proc.stdout


# -- running real scripts as they are ----------------------------------------------------------------------

SAVES = '''
    """Saves the whole model (pickle), copies it and scripts it once trained: what checkpointing code does."""
    import copy

    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(5):
        loss = model(torch.randn(16, 8)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    torch.save(model, "model.pt")
    ema = copy.deepcopy(model)
    scripted = torch.jit.script(model)
    print("SAVED", len(ema._forward_hooks), scripted(torch.randn(2, 8)).shape)
'''


def test_torch_save_deepcopy_and_script_of_a_watched_model(tmp_path):
    folder = write(tmp_path, {"train.py": SAVES})
    proc = verify("train.py", "--steps", "50", "--json", cwd=folder)
    result = result_of(proc)
    assert result["original"]["status"] == "finished", result["original"]["error"]
    assert "SAVED 0 torch.Size([2, 1])" in result["original"]["stdout_tail"]
    import torch

    loaded = torch.load(folder / "model.pt", weights_only=False)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in loaded.modules())


PACKAGE = {
    "data/scale.txt": "2.0\n",
    "pkg/__init__.py": "",
    "pkg/model.py": '''
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 4)

            def forward(self, x):
                x = x / x.norm(dim=-1, keepdim=True)
                return self.fc(x)
    ''',
    "pkg/train.py": '''
        import sys

        import torch

        from .model import Net

        scale = float(open("data/scale.txt").read())  # relative to where the user runs
        print("PATH0", sys.path[0], flush=True)
        torch.manual_seed(0)
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(20):
            x = torch.randn(16, 8) * scale
            if step == 3:
                x[0] = 0
            loss = model(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    ''',
    "unrelated.py": "def f(x):\n    return x / x.norm()\n",
}


def test_a_module_run_with_m_in_the_users_directory(tmp_path):
    project = write(tmp_path / "project", PACKAGE)
    before = digest(project)
    proc = verify("-m", "pkg.train", "--steps", "10", "--json", "--keep", tmp_path / "kept", cwd=project)
    result = result_of(proc)
    assert result["module"] == "pkg.train" and result["original"]["status"] == "stopped"
    assert f"PATH0 {project}" in result["original"]["stdout_tail"]
    assert sorted(result["patch"]["considered"]) == ["pkg/__init__.py", "pkg/model.py", "pkg/train.py"]
    assert [f["path"] for f in result["patch"]["files"]] == ["pkg/model.py"]
    assert "pkg/model.py" in result["patched"]["served"]
    trace = result["original"]["trace"]
    line = next(i for i, text in enumerate((project / "pkg/model.py").read_text().splitlines(), 1) if "x.norm(" in text)
    assert trace["site"]["file"] == "pkg/model.py" and trace["site"]["line"] == line
    assert checks(result["patched"])["nonfinite"]["status"] == "ok"
    assert "non-finite values" in result["verdict"]["fixed"] and proc.returncode == 0
    assert digest(project) == before  # the user's files untouched, nothing written next to them
    kept = (tmp_path / "kept" / "pkg" / "model.py").read_text()
    assert "normalize(" in kept and not (tmp_path / "kept" / "unrelated.py").exists()


def test_a_package_outside_the_scripts_folder_is_patched(tmp_path):
    project = write(tmp_path / "project", {**{k: v for k, v in PACKAGE.items() if k != "pkg/train.py"},
                                          "scripts/train.py": PACKAGE["pkg/train.py"].replace("from .model",
                                                                                              "from pkg.model")})
    proc = verify("scripts/train.py", "--steps", "6", "--json", cwd=project, env={"PYTHONPATH": str(project)})
    result = result_of(proc)
    assert f"PATH0 {project / 'scripts'}" in result["original"]["stdout_tail"]  # as `python scripts/train.py`
    assert [f["path"] for f in result["patch"]["files"]] == ["pkg/model.py"]
    assert checks(result["patched"])["nonfinite"]["status"] == "ok" and proc.returncode == 0


NO_DEVICE_FLAG = '''
    """nanoGPT's poor man's configurator: `--key=value` overrides, no argparse, no --device flag."""
    import sys

    import torch

    device, steps = "cpu", 20
    for arg in sys.argv[1:]:
        key, value = arg[2:].split("=")
        globals()[key] = type(globals()[key])(value)
    model = torch.nn.Linear(4, 1).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        loss = model(torch.randn(8, 4, device=device)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
'''


def test_a_device_the_script_cannot_take_is_said(tmp_path):
    folder = write(tmp_path, {"train.py": NO_DEVICE_FLAG})
    proc = verify("train.py", "--steps", "5", "--device", "cpu", cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, note = proc.stdout.splitlines()[:2]
    assert header.startswith("gradlint verify train.py  (cpu, 5 steps, seed 0")
    assert note.startswith("--device cpu was not passed: the script has no --device argument")


HAND_UPDATE = '''
    """word_language_model without --use-optimizer: clip, then p.data.add_(p.grad, alpha=-lr)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    for step in range(50):
        model.zero_grad()
        loss = model(torch.randn(16, 8)).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-0.5)
'''


def test_a_hand_written_update_trains(tmp_path):
    folder = write(tmp_path, {"train.py": HAND_UPDATE})
    proc = verify("train.py", "--steps", "10", cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = next(line for line in proc.stdout.splitlines() if line.startswith("run "))
    assert "ok   10 backward steps" in run
    assert "nothing was trained" not in proc.stdout and "clipped in 10 of 10 steps" in proc.stdout


# -- what never runs ---------------------------------------------------------------------------------------

def test_a_data_file_is_refused_not_executed(tmp_path):
    (tmp_path / "data.txt").write_text("open('executed', 'w').write('yes')\n")
    proc = verify("data.txt", cwd=tmp_path)
    assert proc.returncode == 2
    assert "data.txt: not a Python file" in proc.stderr
    assert not (tmp_path / "executed").exists()
    (tmp_path / "analysis.ipynb").write_text("{}")
    proc = verify("analysis.ipynb", cwd=tmp_path)
    assert proc.returncode == 2 and "analysis.ipynb: not a Jupyter notebook" in proc.stderr


def test_script_flags_without_double_dash_get_a_hint(tmp_path):
    (tmp_path / "train.py").write_text("raise SystemExit('never runs')\n")
    proc = verify("train.py", "--steps", "3", "--lr", "0.1", "--batch_size=32", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unrecognized arguments: --lr 0.1 --batch_size=32" in proc.stderr
    assert "the script's own arguments go after `--`: gradlint verify train.py -- --lr 0.1 --batch_size=32" in proc.stderr
