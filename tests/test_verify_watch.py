"""`gradlint.watch` in a user's own loop: what happens at the first NaN (`on_nonfinite`), the per-step callback
for the user's logging, and what the record says of each update (learning rate, GradScaler loss scale with
its skipped steps, update-to-weight ratio per layer).

The defects are on purpose: `# noqa` keeps `gradlint fix --write .` on this repository from fixing them.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import gradlint  # noqa: E402
from gradlint.verify.watch import NonFiniteError, NonFiniteWarning, metrics  # noqa: E402

HERE = Path(__file__).resolve()
NAN_LINE = next(n for n, line in enumerate(HERE.read_text().splitlines(), 1) if line.endswith("# the NaN's line"))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        x = x / x.norm(dim=-1, keepdim=True)  # noqa: GL001  # the NaN's line
        return self.out(torch.relu(self.fc(x)))


def batch(i, nan_at=3):
    x = torch.randn(8, 4)
    if i == nan_at:
        x[2] = 0  # an all-zero row: 0 / 0
    return x


def train(action, steps=6, on_step=None):
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    done = []
    with gradlint.watch(model, optimizer, on_nonfinite=action, on_step=on_step) as health:
        for i in range(steps):
            loss = model(batch(i)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # noqa: GL005
            done.append(i)
    return model, health, done


def finite(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_raise_stops_the_loop_at_the_first_nan_before_its_update():
    with pytest.raises(NonFiniteError) as raised:
        train("raise")
    message = str(raised.value)
    assert message.startswith("gradlint: NaN at step 4, forward: `div` in model (Net)")
    assert f"{HERE}:{NAN_LINE}" in message and "x = x / x.norm(dim=-1, keepdim=True)" in message


def test_stop_ends_the_with_block_and_the_code_after_it_runs():
    model, health, done = train("stop")
    assert done == [0, 1, 2]  # the fourth step never finished: its update was not applied
    assert finite(model)
    assert health.stopped and f":{NAN_LINE}" in health.stopped


def test_warn_goes_on_and_says_where():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, health, done = train("warn")
    assert done == list(range(6)) and not finite(model)
    assert [f":{NAN_LINE}" in str(w.message) for w in caught if w.category is NonFiniteWarning] == [True]


def test_unknown_action_is_an_error():
    with pytest.raises(ValueError, match="on_nonfinite"):
        gradlint.watch(nn.Linear(2, 1), on_nonfinite="ignore")


def test_on_step_hands_each_steps_numbers_for_logging():
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteWarning)
        _, health, _ = train("warn", on_step=seen.append)
    assert [s["step"] for s in seen] == [1, 2, 3, 4, 5, 6]
    rows = health.record()["rows"]
    for stats, row in zip(seen[:3], rows):
        assert stats["loss"] == pytest.approx(row["loss"]) and stats["grad_norm"] == pytest.approx(row["total"])
        assert math.hypot(*stats["layer_grad_norms"].values()) == pytest.approx(stats["grad_norm"])
    assert [s["nonfinite_steps"] for s in seen] == [0, 0, 0, 1, 2, 3]
    flat = metrics(seen[0])
    assert set(flat) == {"gradlint/grad_norm", "gradlint/loss", "gradlint/nonfinite_steps", "gradlint/grad_norm/fc",
                         "gradlint/grad_norm/out"}


# -- what each update did -------------------------------------------------------------------------------

def test_learning_rate_loss_scale_and_update_ratio_are_recorded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 3, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    weights = []  # per step: (the parameters before it, after it)
    with pytest.warns(NonFiniteWarning), gradlint.watch(model, optimizer, ratio_every=2) as health:
        for i in range(8):
            loss = model(torch.randn(16, 8)).pow(2).mean()
            if i == 4:
                loss = loss * float("inf")  # an overflow: the scaler skips the step and halves its scale
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            before = [p.detach().clone() for p in model.parameters()]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            weights.append((before, [p.detach().clone() for p in model.parameters()]))
    updates = health.record()["updates"]
    assert [e["lr"][0] for e in updates["lr"]] == pytest.approx([0.01] * 3 + [0.005] * 2 + [0.0025] * 2)
    assert [e["step"] for e in updates["lr"]] == [1, 2, 3, 4, 6, 7, 8]  # step 5 was skipped: no update
    scales = {e["step"]: (e["scale"], e["skipped"]) for e in updates["loss_scale"]}
    assert scales[5] == (1024.0, True) and scales[6] == (512.0, False)
    # each layer's ratio (its weight and bias together) on steps 1, 3, 7 (one in 2; 5 was skipped)
    assert [e["step"] for e in updates["ratio"]] == [1, 3, 7]
    for entry in updates["ratio"]:
        w0, w1 = weights[entry["step"] - 1]
        expected = [math.hypot(*[float((w1[k] - w0[k]).norm()) for k in pair]) /
                    math.hypot(*[float(w1[k].norm()) for k in pair]) for pair in ((0, 1), (2, 3))]
        assert entry["ratios"] == pytest.approx(expected, rel=1e-4)


def test_update_ratio_of_a_large_tensor_is_estimated_from_a_sample():
    from gradlint.verify.updates import SAMPLE

    torch.manual_seed(0)
    model = nn.Linear(512, 64)  # 32768 weights: seen through a strided sample of about SAMPLE
    assert model.weight.numel() > 4 * SAMPLE
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with gradlint.watch(model, optimizer, ratio_every=1) as health:
        for _ in range(3):
            w0 = [p.detach().clone() for p in model.parameters()]
            loss = model(torch.randn(32, 512)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    params = [p.detach() for p in model.parameters()]
    exact = math.hypot(*[float((p - q).norm()) for p, q in zip(params, w0)]) / math.hypot(
        *[float(p.norm()) for p in params])
    estimate = health.record()["updates"]["ratio"][-1]["ratios"][0]
    assert estimate == pytest.approx(exact, rel=0.05)
