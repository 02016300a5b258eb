"""`GradlintCallback` in a real Lightning `Trainer`, as a Lightning user runs it: its metrics in a `CSVLogger`'s
`metrics.csv`, `on_nonfinite` stopping or ending `Trainer.fit` at the first NaN with the line that made it
(in `training_step` itself, or inside the model), `fast_dev_run`, and the short import path."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

from torch import nn  # noqa: E402

from gradlint.lightning import GradlintCallback, NonFiniteError, NonFiniteWarning  # noqa: E402

HERE = Path(__file__).resolve()
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")  # Lightning's own deprecation, not ours


def _line(needle: str) -> int:
    return next(n for n, line in enumerate(HERE.read_text().splitlines(), 1) if needle in line and "_line(" not in line)


class Normalized(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 16)

    def forward(self, x):
        x = x / x.norm(dim=-1, keepdim=True)  # NaN for an all-zero row
        return self.fc(x)


class Regressor(L.LightningModule):
    """Logs its own loss; at batch `nan_at` (if any) makes a NaN: in `training_step` (a zero scale), or in the
    model (`in_model`: an all-zero input row)."""

    def __init__(self, nan_at=None, in_model=False):
        super().__init__()
        self.model = nn.Sequential(Normalized(), nn.ReLU(), nn.Linear(16, 1))
        self.nan_at, self.in_model = nan_at, in_model

    def training_step(self, batch, batch_idx):
        x, y = batch
        if batch_idx == self.nan_at and self.in_model:
            x = torch.cat([torch.zeros_like(x[:1]), x[1:]])
        scale = y.std() * (0 if batch_idx == self.nan_at and not self.in_model else 1)
        loss = ((self.model(x) - y) ** 2).mean() / scale  # the training step's own division
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader(n=64):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def _trainer(**kwargs):
    options = dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=False)
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return L.Trainer(**options)


def _finite(module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def test_metrics_reach_a_real_csv_logger(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    callback = GradlintCallback(print_summary=False)
    trainer = _trainer(max_epochs=2, log_every_n_steps=2, logger=CSVLogger(tmp_path, name="run"),
                       callbacks=[callback])
    trainer.fit(Regressor(), _loader())
    rows = list(csv.DictReader(open(next(tmp_path.glob("run/*/metrics.csv")))))
    steps = [r for r in rows if r["gradlint/grad_norm"]]
    own = {r["step"]: float(r["train_loss"]) for r in rows if r["train_loss"]}  # what the module logged itself
    assert len(steps) == 8 and set(own) == {r["step"] for r in steps}  # 16 steps, every 2nd, as Lightning logs
    for r in steps:
        norms = [float(r["gradlint/grad_norm/model.0.fc"]), float(r["gradlint/grad_norm/model.2"])]
        # the layers' norms make up the total, and the loss is the module's own at that step
        assert math.isclose(float(r["gradlint/grad_norm"]), math.hypot(*norms), rel_tol=1e-5)
        assert math.isclose(float(r["gradlint/loss"]), own[r["step"]], rel_tol=1e-5)
        assert float(r["gradlint/nonfinite_steps"]) == 0
    epochs = [r for r in rows if r["gradlint/healthy"]]
    assert len(epochs) == 2  # one a training epoch
    assert all(r["gradlint/healthy"] == "1.0" and r["gradlint/check/nonfinite"] == "0.0" for r in epochs)
    assert epochs[0]["gradlint/check/clipping"] == "1.0"  # no clipping: a warning


def test_raise_ends_fit_at_the_first_nan_with_the_training_step_line():
    callback = GradlintCallback(on_nonfinite="raise", print_summary=False)
    trainer = _trainer(max_epochs=1, logger=False, callbacks=[callback])
    module = Regressor(nan_at=3)
    with pytest.raises(NonFiniteError) as raised:
        trainer.fit(module, _loader())
    line = _line("loss = ((self.model(x) - y) ** 2).mean() / scale")
    message = str(raised.value)
    assert f"{HERE}:{line}" in message and "training_step()" in message
    assert "loss = ((self.model(x) - y) ** 2).mean() / scale" in message
    assert trainer.global_step == 3 and _finite(module)  # stopped before the NaN step's update
    trace = callback.summary()["trace"]
    assert trace["site"]["function"] == "training_step"
    assert [c["function"] for c in trace["chain"]][-1] == "training_step"


def test_nan_inside_the_model_under_fast_dev_run_names_the_module_and_its_line():
    callback = GradlintCallback(on_nonfinite="raise", print_summary=False)
    trainer = _trainer(fast_dev_run=6, callbacks=[callback])
    with pytest.raises(NonFiniteError) as raised:
        trainer.fit(Regressor(nan_at=2, in_model=True), _loader())
    assert f"{HERE}:{_line('x = x / x.norm(dim=-1, keepdim=True)')}" in str(raised.value)
    assert "in model.0 (Normalized)" in str(raised.value)  # the fully qualified name


def test_stop_ends_fit_after_the_nan_step_and_warn_goes_on():
    stop = GradlintCallback(on_nonfinite="stop", print_summary=False)
    trainer = _trainer(max_epochs=1, logger=False, callbacks=[stop])
    with pytest.warns(NonFiniteWarning, match="training_step"):
        trainer.fit(Regressor(nan_at=3), _loader())
    assert trainer.global_step == 4  # Lightning's should_stop: the step ends, the fit does not go on
    assert stop.summary()["first_nonfinite"]["step"] == 4

    warn = GradlintCallback(on_nonfinite="warn", print_summary=False)
    trainer = _trainer(max_epochs=1, logger=False, callbacks=[warn])
    with pytest.warns(NonFiniteWarning):
        trainer.fit(Regressor(nan_at=3), _loader())
    assert trainer.global_step == 8
    assert not warn.summary()["healthy"]


def test_fast_dev_run_healthy_with_qualified_names():
    callback = GradlintCallback(print_summary=False)
    trainer = _trainer(fast_dev_run=True, callbacks=[callback])
    trainer.fit(Regressor(), _loader())
    summary = callback.summary()
    assert summary["healthy"] and summary["steps"] == 1
    assert summary["layers"] == ["model.0.fc", "model.2"]


def test_import_gradlint_loads_neither_torch_nor_lightning():
    code = ("import sys, gradlint; gradlint.__version__; "
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
