"""The harness's monitor on training loops as real scripts write them, in process: what counts as a step
(several optimizers, hand-written updates, LBFGS closures, gradient accumulation), functional activations
and recurrent layers watched for dead and saturated units, and a watched model that pickles, copies,
scripts and compiles exactly as the same model unwatched.

The defects are on purpose: `# noqa` keeps `gradlint fix --write .` on this repository from fixing them.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from gradlint.verify.checks import evaluate  # noqa: E402
from gradlint.verify.monitor import Monitor, StopRun  # noqa: E402


def watched(fn, steps=None, window=10):
    """Run `fn` under a harness-mode monitor (global hooks, roots found from the calls); its record."""
    from gradlint.verify.monitor import Thresholds

    monitor = Monitor(Thresholds(window=window))
    monitor.max_steps = steps
    monitor.attach_global()
    stopped = False
    try:
        fn()
    except StopRun:
        stopped = True
    finally:
        monitor.flush(partial=not stopped)
        monitor.detach()
    return monitor.record()


def check(record, key):
    return next(c for c in evaluate(dict(record, status="stopped")) if c.key == key)


# -- what a step is -------------------------------------------------------------------------------------

class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6))

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1)


def test_two_optimizers_have_a_series_each_named_after_their_models():
    torch.manual_seed(0)
    netG, netD = Generator(), Discriminator()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4)
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4)
    criterion = nn.BCELoss()
    logged = []

    def gan():
        for _ in range(20):
            real = torch.randn(8, 6)
            netD.zero_grad()
            errD_real = criterion(netD(real), torch.ones(8))
            errD_real.backward()
            fake = netG(torch.randn(8, 4))
            errD_fake = criterion(netD(fake.detach()), torch.zeros(8))
            errD_fake.backward()
            optimizerD.step()  # noqa: GL005
            netG.zero_grad()
            errG = criterion(netD(fake), torch.ones(8))
            errG.backward()
            optimizerG.step()  # noqa: GL005
            logged.append(((errD_real + errD_fake).item(), errG.item()))

    record = watched(gan, steps=5)
    assert record["steps"] == 5  # five iterations: D and G stepped five times each (the fifth not logged: stopped)
    assert [(s["name"], s["steps"]) for s in record["series"]] == [("netD", 5), ("netG", 5)]
    assert "netG.main.0" in record["layers"] and "netD.main.2" in record["layers"]
    assert "main.0" not in record["layers"]
    by_series = {0: [], 1: []}
    for row in record["rows"]:
        by_series[row["series"]].append(row["loss"])
    # each optimizer's own loss, as the script logs it: D's the sum of its two backwards
    assert by_series[0][:4] == pytest.approx([d for d, _ in logged], rel=1e-6)
    assert by_series[1][:4] == pytest.approx([g for _, g in logged], rel=1e-6)


def test_hand_written_updates_count_a_step_per_backward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    losses = []

    def manual():
        for _ in range(12):
            model.zero_grad()
            loss = model(torch.randn(16, 8)).pow(2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-0.1)
            losses.append(loss.item())

    record = watched(manual, steps=6)
    assert record["series"] == [{"index": -1, "name": "backward steps", "steps": 6, "kind": "backward"}]
    assert [r["loss"] for r in record["rows"]] == pytest.approx(losses[:6], rel=1e-6)
    # the norms read are the applied ones: after the clip
    assert all(r["total"] <= 0.5 * (1 + 1e-4) for r in record["rows"])
    assert any(r["total"] == pytest.approx(0.5, rel=1e-4) for r in record["rows"])
    run = evaluate(dict(record, status="stopped"))[0]
    assert run.status == "ok" and run.summary.startswith("6 backward steps")


def test_lbfgs_closure_is_one_step_with_the_first_evaluations_loss():
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    returned = []

    def lbfgs():
        for _ in range(4):
            def closure():
                optimizer.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                return loss
            returned.append(optimizer.step(closure).item())

    record = watched(lbfgs, steps=4)
    assert [(s["kind"], s["steps"]) for s in record["series"]] == [("closure", 4)]
    assert [r["loss"] for r in record["rows"]][:3] == pytest.approx(returned, rel=1e-6)  # the 4th stopped
    assert all(r["losses"] > 1 for r in record["rows"][:1])  # several evaluations, one step


def test_gradient_accumulation_shows_the_steps_loss():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    logged = []

    def accumulate():
        for _ in range(6):
            total = 0.0
            for _ in range(4):
                loss = model(torch.randn(8, 4)).pow(2).mean() / 4
                loss.backward()
                total += loss.item()
            optimizer.step()  # noqa: GL005
            optimizer.zero_grad()
            logged.append(total)

    record = watched(accumulate, steps=6)
    assert [r["loss"] for r in record["rows"]][:5] == pytest.approx(logged, rel=1e-6)  # the 6th stopped
    assert [r["losses"] for r in record["rows"]] == [4] * 6


# -- activations ----------------------------------------------------------------------------------------

class FunctionalNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = F.relu(self.fc1(x))  # functional relu
        return self.head(torch.tanh(self.fc2(h) * 300))  # functional tanh


def test_functional_activations_are_watched_per_call_site():
    torch.manual_seed(0)
    model = FunctionalNet()
    with torch.no_grad():
        model.fc1.bias[:12] = -100.0  # 12 of 16 units never fire
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)

    def loop():
        for _ in range(8):
            loss = model(torch.randn(32, 8)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # noqa: GL005

    record = watched(loop, window=4)
    dead, saturated = check(record, "dead_units"), check(record, "saturated_units")
    assert dead.status == "warn" and dead.summary.startswith("12 of 16 units dead")
    assert dead.details[0].startswith(f"model: relu() at {__file__}:")
    assert saturated.status == "warn"
    assert F.relu is FUNCTIONAL[0] and torch.tanh is FUNCTIONAL[1]  # put back


FUNCTIONAL = (F.relu, torch.tanh)


def test_lstm_hidden_units_pinned_at_one_are_saturated():
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 8, batch_first=True)
    with torch.no_grad():
        for p in lstm.parameters():
            p.fill_(2.0)  # every gate and the cell input driven to saturation by positive inputs
    head = nn.Linear(8, 1)
    optimizer = torch.optim.SGD([*lstm.parameters(), *head.parameters()], lr=1e-5)

    def loop():
        for _ in range(6):
            out, _ = lstm(torch.randn(4, 80, 4).abs())
            loss = head(out).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # noqa: GL005

    record = watched(loop, window=3)
    saturated = check(record, "saturated_units")
    assert saturated.status == "warn" and "lstm" in saturated.details[0]


# -- invisible to pickle, deepcopy, TorchScript, torch.compile, torch.export ------------------------------

class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh())
        self.act = torch.tanh  # a function stored on the module, as TransformerEncoderLayer stores F.relu

    def forward(self, x):
        return self.act(self.body(x)).sum(-1)


def _trained_under_monitor():
    torch.manual_seed(0)
    model = Small()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = Monitor()
    monitor.attach_global()
    for _ in range(2):
        loss = model(torch.randn(4, 4)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # noqa: GL005
    assert monitor.roots and any(m._forward_hooks for m in model.modules())  # hooks on the model
    return model, monitor


def test_a_watched_model_pickles_and_copies_as_the_unwatched_one():
    model, monitor = _trained_under_monitor()
    try:
        watched_bytes = pickle.dumps(model)
        buffer = io.BytesIO()
        torch.save(model, buffer)  # the PicklingError of Monitor._root_post the issue saw
        copied = copy.deepcopy(model)
        state = model.state_dict()
    finally:
        monitor.flush()
        monitor.detach()
    assert watched_bytes == pickle.dumps(model)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in copied.modules())
    assert copied.act is torch.tanh and pickle.loads(watched_bytes).act is torch.tanh
    assert state.keys() == model.state_dict().keys()
    assert len(buffer.getvalue()) > 0


def test_a_watched_model_scripts_traces_and_compiles_as_the_unwatched_one():
    model, monitor = _trained_under_monitor()
    x = torch.randn(2, 4)
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    try:
        scripted = torch.jit.script(model.body)
        traced = torch.jit.trace(model, x)
        torch._dynamo.reset()
        compiled_out = torch.compile(model, backend=capture)(x)
    finally:
        monitor.flush()
        monitor.detach()
    assert torch.allclose(scripted(x), model.body(x)) and torch.allclose(traced(x), model(x))
    assert "gradlint" not in str(traced.graph)
    torch._dynamo.reset()
    torch.compile(model, backend=capture)(x)
    assert len(graphs) == 2 and graphs[0] == graphs[1]  # the same graph, watched or not
    assert torch.allclose(compiled_out, model(x))


def test_a_watched_model_exports_as_the_unwatched_one():
    export = pytest.importorskip("torch.export")
    model, monitor = _trained_under_monitor()
    x = torch.randn(2, 4)
    try:
        watched_graph = str(export.export(model, (x,)).graph)
    finally:
        monitor.flush()
        monitor.detach()
    assert watched_graph == str(export.export(model, (x,)).graph)


def test_a_backward_before_training_starts_does_not_become_a_series():
    """A gradient check before the loop (backward, then zero_grad) looks like a hand-written step; once an
    optimizer steps, its steps are the run's and the stop comes after N of them."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def loop():
        model(torch.randn(2, 4)).sum().backward()  # a sanity check of the gradients
        model.zero_grad()
        for _ in range(50):
            loss = model(torch.randn(8, 4)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # noqa: GL005

    record = watched(loop, steps=5)
    steps = {s["kind"]: s["steps"] for s in record["series"]}
    assert steps == {"optimizer": 5} and record["steps"] == 5 and len(record["rows"]) == 5
