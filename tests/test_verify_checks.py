"""Each health check on a tiny model with a known defect, in process, through `gradlint.watch` (the
library API) and the op-level tracer; and the Lightning callback built on them. CPU only, a few seconds.

The defects are on purpose: `# noqa` keeps `gradlint fix --write .` on this repository from fixing them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import gradlint  # noqa: E402
from gradlint.verify.trace import Tracer  # noqa: E402

HERE = Path(__file__).read_text().splitlines()
ORIGINALS = (torch.nn.utils.clip_grad_norm_, torch.Tensor.backward, torch.no_grad.__enter__)


def line_of(marker: str) -> int:
    """The line of this file that carries `# <marker>`."""
    return next(i for i, text in enumerate(HERE, 1) if f"# {marker}" in text)


def check(summary: dict, key: str) -> dict:
    return next(c for c in summary["checks"] if c["key"] == key)


def train(model, optimizer, steps, batch, loss_fn=lambda out: out.pow(2).mean(), clip=None, before=None):
    for step in range(1, steps + 1):
        x = batch(step)
        if before is not None:
            before(step)
        loss = loss_fn(model(x))
        optimizer.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()


# -- non-finite values ------------------------------------------------------------------------------------

class Pool(nn.Module):
    def __init__(self, guarded: bool):
        super().__init__()
        self.guarded = guarded

    def forward(self, x):
        if self.guarded:
            return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        return x / x.norm(dim=-1, keepdim=True)  # unguarded pool  # noqa: GL001


class Block(nn.Module):
    def __init__(self, guarded: bool):
        super().__init__()
        self.fc = nn.Linear(8, 8, bias=False)
        self.pool = Pool(guarded)

    def forward(self, x):
        return self.pool(self.fc(x))


class Tower(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(True), Block(False)])
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def zero_row_at(step_with_zero):
    def batch(step):
        x = torch.randn(4, 8)
        if step == step_with_zero:
            x[2] = 0
        return x
    return batch


def test_nan_in_a_module_is_named_with_its_qualified_module_and_line():
    torch.manual_seed(0)
    model = Tower()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradlint.watch(model, optimizer) as health:
        train(model, optimizer, 5, zero_row_at(3))
    summary = health.summary()
    assert summary["first_nonfinite"]["step"] == 3
    assert summary["first_nonfinite"]["seen_in"] == "model output"
    trace = summary["trace"]
    assert trace["phase"] == "forward" and trace["kind"] == "nan" and trace["op"] == "div"
    assert trace["module"] == "blocks.1.pool" and trace["module_class"] == "Pool"
    assert trace["site"]["file"] == __file__ and trace["site"]["line"] == line_of("unguarded pool")
    assert check(summary, "nonfinite")["status"] == "fail"
    assert not summary["healthy"]


def clip_style_loss(features):
    features = features / features.norm(dim=-1, keepdim=True)  # free function norm  # noqa: GL001
    return (features @ features.T).logsumexp(-1).mean()


def test_nan_in_a_free_loss_function_is_traced_to_its_line():
    model = nn.Linear(8, 8, bias=False)
    x = torch.randn(4, 8)
    x[1] = 0
    with Tracer() as tracer:  # armed by hand, as the harness arms it for the replayed step
        clip_style_loss(model(x)).backward()
    origin = tracer.result()
    assert origin["phase"] == "forward" and origin["module"] is None
    assert origin["site"]["function"] == "clip_style_loss"
    assert origin["site"]["line"] == line_of("free function norm")


def rms(x):
    return x / (torch.sqrt((x * x).sum(-1, keepdim=True)) + 1e-6)  # eps outside the sqrt  # noqa: GL001


def test_backward_only_nan_is_found_in_the_backward_pass():
    x = torch.randn(3, 4)
    x[0] = 0
    x.requires_grad_()
    tracer = Tracer().arm()
    try:
        y = rms(x)
        assert torch.isfinite(y).all()  # the forward is fine
        y.sum().backward()
    finally:
        tracer.disarm()
    assert not torch.isfinite(x.grad).all()
    origin = tracer.result()
    assert origin["phase"] == "backward" and origin["op"] == "sqrt"
    assert origin["site"]["line"] == line_of("eps outside the sqrt")


def attention(scores, mask):
    return scores.masked_fill(mask, float("-inf")).softmax(-1)


def test_masking_with_minus_inf_is_not_an_origin_but_an_all_masked_row_is():
    scores = torch.randn(2, 4)
    partly = torch.tensor([[False, True, True, False], [True, False, False, False]])
    with Tracer() as tracer:
        out = attention(scores, partly)
    assert torch.isfinite(out).all() and tracer.result() is None
    fully = partly.clone()
    fully[1] = True
    with Tracer() as tracer:
        attention(scores, fully)
    origin = tracer.result()
    assert origin["op"] == "softmax" and origin["kind"] == "nan" and "Inf input" in origin["note"]


def test_building_a_model_from_uninitialised_memory_is_not_an_origin():
    with Tracer() as tracer:
        nn.MultiheadAttention(16, 4)
        nn.Linear(64, 64)
    assert tracer.result() is None


def test_gradscaler_skipping_overflowing_steps_is_not_a_nan():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127)  # the scaled gradients overflow at first
    with gradlint.watch(model, optimizer) as health:
        for _ in range(24):
            loss = model(10 * torch.randn(8, 4)).pow(2).mean()
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    summary = health.summary()
    nonfinite = check(summary, "nonfinite")
    assert nonfinite["status"] == "ok" and "skipped" in nonfinite["summary"]
    assert summary["first_nonfinite"] is None


# -- gradient norms -----------------------------------------------------------------------------------------

def regression(steps, clip, lr=0.02):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    target = 50.0

    with gradlint.watch(model, optimizer) as health:
        train(model, optimizer, steps, lambda step: torch.randn(32, 16) * 3,
              loss_fn=lambda out: (out - target).pow(2).mean(), clip=clip)
    return health.summary()


def test_exploding_gradients_without_clipping_and_with_it():
    summary = regression(12, clip=None)
    exploding = check(summary, "exploding")
    assert exploding["status"] == "fail" and "above 100" in exploding["summary"]
    assert check(summary, "clipping")["status"] == "warn"
    assert len(summary["layers"]) == 2 and summary["layers"] == ["0", "1"]
    assert all(len(row) == 2 for row in summary["grad_norms"])

    clipped = regression(12, clip=1.0)
    assert check(clipped, "exploding")["status"] == "ok"
    clipping = check(clipped, "clipping")
    assert clipping["status"] == "ok" and "clipped in 12 of 12 steps" in clipping["summary"]
    before, after = (float(v) for v in
                     __import__("re").search(r"median (\S+) before, (\S+) after", clipping["details"][0]).groups())
    assert before > 1.0 and after == pytest.approx(1.0, rel=1e-3)


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_vanishing_gradient_in_one_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), Scale(1e-10), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradlint.watch(model, optimizer) as health:
        train(model, optimizer, 6, lambda step: torch.randn(16, 8))
    vanishing = check(health.summary(), "vanishing")
    assert vanishing["status"] == "warn"
    assert vanishing["details"][0].startswith("0: median")


# -- activations --------------------------------------------------------------------------------------------

def test_dead_relu_units():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        model[0].bias[:12] = -100.0  # 12 of 16 units never fire
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with gradlint.watch(model, optimizer, window=4) as health:
        train(model, optimizer, 8, lambda step: torch.randn(32, 8))
    dead = check(health.summary(), "dead_units")
    assert dead["status"] == "warn"
    assert dead["summary"].startswith("12 of 16 units dead over steps 5-8")
    assert dead["details"] == ["1: 12/16 dead"]

    # forwards without steps (no window ends): the per-call results stay bounded
    with gradlint.watch(model, optimizer) as health:
        tracker = health.monitor._activations[0]
        for _ in range(3 * tracker.FOLD):
            model(torch.randn(4, 8))
        assert 0 < len(tracker.parts) < tracker.FOLD


def test_saturated_tanh_units():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        model[0].weight.mul_(200.0)
        model[0].bias.zero_()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    with gradlint.watch(model, optimizer, window=3) as health:
        train(model, optimizer, 6, lambda step: torch.sign(torch.randn(64, 8)))
    saturated = check(health.summary(), "saturated_units")
    assert saturated["status"] == "warn" and "saturated" in saturated["summary"]
    assert check(health.summary(), "dead_units")["status"] == "n/a"


# -- eval/train mode --------------------------------------------------------------------------------------

def small_net():
    return nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Linear(8, 1))


def evaluate(model, x):
    with torch.no_grad():
        return model(x)  # eval without .eval()  # noqa: GL004


@torch.inference_mode()
def predict(model, x):
    return model(x)  # predict without .eval()


def test_eval_mode_mistake_reports_the_calling_line():
    torch.manual_seed(0)
    model = small_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradlint.watch(model, optimizer) as health:
        train(model, optimizer, 2, lambda step: torch.randn(16, 8))
        evaluate(model, torch.randn(4, 8))
        evaluate(model, torch.randn(4, 8))
        predict(model, torch.randn(4, 8))
        model.eval()
        evaluate(model, torch.randn(4, 8))  # correct: not reported
        model.train()
    summary = health.summary()
    eval_mode = check(summary, "eval_mode")
    assert eval_mode["status"] == "fail"
    assert eval_mode["summary"].startswith("3 forward(s) under no_grad with BatchNorm1d/Dropout in training mode")
    assert f"{__file__}:{line_of('eval without .eval()')}" in eval_mode["summary"]
    details = "\n".join(eval_mode["details"])
    assert f":{line_of('eval without .eval()')} in evaluate(), 2x: 1, 2" in details
    assert f":{line_of('predict without .eval()')} in predict(), 1x" in details
    assert check(summary, "train_mode")["status"] == "ok"


def test_training_in_eval_mode_after_evaluation_is_reported():
    torch.manual_seed(0)
    model = small_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()

    def epoch_end(step):
        if step == 3:
            model.eval()  # evaluation switches modes and nothing switches back

    with gradlint.watch(model, optimizer) as health:
        train(model, optimizer, 5, lambda step: torch.randn(16, 8), before=epoch_end)
    train_mode = check(health.summary(), "train_mode")
    assert train_mode["status"] == "fail"
    assert "3 training forward(s) in eval mode from step 3" in train_mode["summary"]


# -- clipping ---------------------------------------------------------------------------------------------

def amp_steps(unscale_first: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu")
    with gradlint.watch(model, optimizer) as health:
        for _ in range(4):
            loss = model(torch.randn(16, 8)).pow(2).mean()
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            if unscale_first:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the clip
            scaler.step(optimizer)
            scaler.update()
    return health.summary()


def test_clip_on_scaled_gradients():
    summary = amp_steps(unscale_first=False)
    clipping = check(summary, "clipping")
    assert clipping["status"] == "fail"
    assert clipping["summary"] == "clipped scaled gradients (scale 6.55e+04) in 4 of 4 steps"
    assert f"at {__file__}:{line_of('the clip')}" in clipping["details"][0]
    assert "true norm" in clipping["details"][1]
    assert all(not isinstance(v, str) for v in summary["loss"])  # the loss recorded unscaled
    fixed = check(amp_steps(unscale_first=True), "clipping")
    assert fixed["status"] == "ok" and "clipped in 4 of 4 steps" in fixed["summary"]


def test_clipping_counts_the_steps_the_optimizer_took():
    """A step the GradScaler skips was clipped too, but not taken: "clipped in 30 of 21 steps" came from
    counting it on one side only."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    with gradlint.watch(model, optimizer) as health:
        for step in range(1, 7):
            loss = model(torch.randn(16, 8)).pow(2).mean()
            if step in (2, 5):
                loss = loss * float("inf")  # inf gradients: the scaler skips this step
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
    summary = health.summary()
    assert sum(1 for r in health.record()["rows"] if r["skipped"]) == 2
    clipping = check(summary, "clipping")
    assert clipping["status"] == "ok"
    assert clipping["summary"].startswith("clipped in 4 of 4 steps (max_norm 1, cut ")
    assert clipping["summary"].endswith("; 2 more skipped by the GradScaler")


def test_clipping_inside_the_step_adds_no_no_grad_block():
    """`clip_grad_norm_` runs under its own no_grad every step: the monitor must not install its global
    eval-mode hooks for it (a user's own no_grad block still counts)."""
    model = small_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradlint.watch(model, optimizer) as health:
        seen = []
        on_no_grad = health.monitor.on_no_grad
        health.monitor.on_no_grad = lambda delta: (seen.append(delta), on_no_grad(delta))
        train(model, optimizer, 3, lambda step: torch.randn(16, 8), clip=1.0)
        assert seen == []
        with torch.no_grad():
            pass
        assert seen == [1, -1]


class FakeEvent:
    """A CUDA event's interface: `query` says whether the copy behind it is done, `synchronize` waits."""

    def __init__(self):
        self.done, self.waited = False, False

    def query(self):
        return self.done

    def synchronize(self):
        self.waited = self.done = True


def test_async_reads_wait_only_when_the_device_is_far_behind():
    from gradlint.verify.reads import IN_FLIGHT, DeviceReads

    rows = []
    reads = DeviceReads(lambda meta, values: rows.append((meta, values)))
    events = []

    def copy_queued(step):  # what `_read_later` leaves: a step's values behind an event
        event = FakeEvent()
        events.append(event)
        meta = (step, 0, [], 0, 0, 1, [], False, False)  # one loss value
        reads.in_flight.append((meta, torch.tensor([float(step)]), (None, event, None)))

    for step in range(1, IN_FLIGHT):
        copy_queued(step)
        reads.done()
    assert rows == [] and reads.waits == 0  # nothing done yet, nothing waited for
    events[1].done = True
    reads.done()
    assert rows == []  # step 2 is done, but step 1 comes first
    events[0].done = True
    reads.done()
    assert [meta[0] for meta, _ in rows] == [1, 2] and reads.waits == 0
    last = 2 + IN_FLIGHT
    for step in range(IN_FLIGHT, last + 1):  # steps 3 .. last pending: IN_FLIGHT of them
        copy_queued(step)
    reads.done()  # the oldest is waited for, once; the others are not done
    assert reads.waits == 1 and events[2].waited and not any(e.waited for e in events[3:])
    assert len(reads.in_flight) == IN_FLIGHT - 1
    reads.done(wait=True)  # the record: everything
    assert [values for _, values in rows] == [[float(s)] for s in range(1, last + 1)]
    assert len(reads.slots) == last and not reads.in_flight


def test_norms_laid_out_in_one_buffer_are_read_as_one_vector():
    """CUDA's `_foreach_norm` returns a 0-d view of each element of one buffer; CPU's, tensors of their own."""
    from gradlint.verify.reads import one_vector as _one_vector

    buffer = torch.arange(5.0)
    assert torch.equal(_one_vector([buffer[i] for i in range(5)]), buffer)
    assert _one_vector([torch.tensor(float(i)) for i in range(5)]) is None
    assert _one_vector([buffer[0], torch.zeros(()), buffer[2]]) is None  # not all of them in the buffer
    assert _one_vector([buffer[0], buffer[2]]) is None
    assert _one_vector([buffer[0], buffer[1], buffer[1], buffer[3]]) is None  # ends right, middle not


def test_norms_in_one_buffer_give_the_same_record(monkeypatch):
    """The one-vector path (CUDA's layout, emulated here) reads the same values as stacking."""
    def rows():
        torch.manual_seed(0)
        model = small_net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        with gradlint.watch(model, optimizer) as health:
            train(model, optimizer, 3, lambda step: torch.randn(16, 8), clip=1.0)
        return health.record()["rows"]

    from gradlint.verify import monitor

    stacked = rows()
    original, one_vector, used = torch._foreach_norm, monitor.one_vector, []
    monkeypatch.setattr(torch, "_foreach_norm", lambda tensors, *a, **k: list(torch.stack(original(tensors))))
    monkeypatch.setattr(monitor, "one_vector", lambda norms: used.append(one_vector(norms)) or used[-1])
    assert rows() == stacked
    assert len(used) == 3 and all(v is not None for v in used)


# -- the library API and its replay --------------------------------------------------------------------

class Noisy(nn.Module):
    """Dropout and BatchNorm (RNG and buffers the replay must restore), and an output with a NaN column
    the loss ignores (the replay runs, the training does not see it)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = self.drop(self.bn(self.fc(x)))
        return torch.cat([h, (h[:, :1] / h[:, :1].abs().min().mul(0)).detach()], dim=1)


def run_noisy(watched: bool):
    torch.manual_seed(0)
    model = Noisy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    health = gradlint.watch(model, optimizer) if watched else None
    if health is not None:
        health.start()
    train(model, optimizer, 4, lambda step: torch.randn(16, 8),
          loss_fn=lambda out: torch.nan_to_num(out[:, :8]).pow(2).mean() + torch.rand(()))
    if health is not None:
        health.stop()
    return model, health


def test_watch_replay_leaves_the_users_run_exactly_as_it_was():
    plain, _ = run_noisy(watched=False)
    watched, health = run_noisy(watched=True)
    assert health.summary()["trace"] is not None  # the replay ran (the output had a NaN)
    for a, b in zip(plain.state_dict().values(), watched.state_dict().values()):
        assert torch.isfinite(a).all() and torch.equal(a, b)


def test_watch_summary_and_text():
    torch.manual_seed(0)
    model = small_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradlint.watch(model, optimizer) as health:
        train(model, optimizer, 3, lambda step: torch.randn(16, 8))
    summary = health.summary()
    assert summary["healthy"] and summary["steps"] == 3
    assert {c["key"] for c in summary["checks"]} >= {"nonfinite", "exploding", "vanishing", "clipping", "eval_mode",
                                                      "train_mode", "dead_units", "saturated_units", "loss"}
    assert all(math.isfinite(v) for v in summary["loss"])
    text = str(health)
    assert text.startswith("gradlint health: 3 step(s)") and "WARN gradient clipping" in text
    # the wrappers are gone once the block ends
    assert torch.nn.utils.clip_grad_norm_ is ORIGINALS[0] and torch.Tensor.backward is ORIGINALS[1]
    assert torch.no_grad.__enter__ is ORIGINALS[2]


# -- Lightning ------------------------------------------------------------------------------------------

def test_lightning_callback():
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from gradlint.verify.lightning import GradlintCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 8))

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self.model(x / x.norm(dim=-1, keepdim=True)).pow(2).mean()  # lightning norm  # noqa: GL001

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    x = torch.randn(48, 8)
    x[27] = 0  # in the fourth batch of 8
    callback = GradlintCallback(print_summary=False)  # on_nonfinite="warn": the fit goes on
    trainer = L.Trainer(max_steps=6, callbacks=[callback], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.warns(RuntimeWarning, match="training_step"):  # NonFiniteWarning
        trainer.fit(Module(), DataLoader(TensorDataset(x), batch_size=8))
    summary = callback.summary()
    assert summary["steps"] == 6
    assert summary["first_nonfinite"]["step"] == 4
    # the NaN is made in training_step, before model(): its replay finds the line
    trace = summary["trace"]
    assert trace["phase"] == "forward" and trace["site"]["function"] == "training_step"
    assert trace["site"]["code"].startswith("return self.model(x / x.norm(dim=-1, keepdim=True))")
    assert check(summary, "clipping")["status"] == "warn"
    assert summary["layers"] == ["model.0", "model.3"]  # named as the LightningModule names them


# -- torch.compile ------------------------------------------------------------------------------------------

def test_compiled_model_under_the_harness_hooks():
    """The harness's global hooks must not break a compiled model (dynamo would trace them): they run eagerly,
    layer names drop the `_orig_mod.` wrapper, and no activation hook is put inside the compiled graph."""
    from gradlint.verify.monitor import Monitor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    compiled = torch.compile(model)
    try:
        compiled(torch.randn(2, 8))
    except Exception as error:  # no C compiler for inductor on this machine
        pytest.skip(f"torch.compile does not run here: {type(error).__name__}")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = Monitor()
    monitor.attach_global()
    try:
        for _ in range(3):
            loss = compiled(torch.randn(8, 8)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()  # noqa: GL005
    finally:
        monitor.flush()
        monitor.detach()
    record = monitor.record()
    assert record["steps"] == 3 and record["first_nonfinite"] is None
    assert record["layers"] == ["0", "2"] and record["activations"] == []
    assert all(isinstance(v, float) for row in record["rows"] for v in row["norms"])
