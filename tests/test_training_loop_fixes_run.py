"""The safe fixes of GL004, GL006 and GL007, run under torch: the original and the fixed snippet train the same
model from the same seed, and what changes is only what was broken.

- GL004: the evaluation now runs in eval mode, every optimizer step still runs in training mode, and the
  trained weights are the very same (BatchNorm normalizes training batches with their own statistics either
  way; the evaluation no longer writes validation data into its running statistics).
- GL006: the steps after the first evaluation run in training mode again; the first epoch, which the
  original trained correctly, is unchanged; a submodule frozen on purpose stays frozen.
- GL007: the clip sees the true gradients: with gradients below the bound the fixed run equals a run without
  clipping, which the original (clipping the loss-scaled gradients) does not; and no fix is offered where a
  helper unscales later, where the inserted `unscale_` would raise.

Skipped where torch is absent (the static side never needs it).
"""

from __future__ import annotations

import pytest

from gradlint.engine import fix_text
from gradlint.rules.clip_before_unscale import ClipBeforeUnscale
from gradlint.rules.eval_without_eval_mode import EvalWithoutEvalMode
from gradlint.rules.train_mode_not_restored import TrainModeNotRestored

torch = pytest.importorskip("torch")
nn = torch.nn


def _data(seed: int, batches: int = 4):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=generator), torch.randn(8, 1, generator=generator)) for _ in range(batches)]


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))


class _Recorder:
    """Modes seen by the model's forwards (with and without gradients) and by the optimizer's steps."""

    def __init__(self, model, optimizer) -> None:
        self.forwards: list = []  # (grad enabled, model.training, model[1].training)
        self.steps: list = []  # (model.training, model[1].training)
        self.weights: list = []  # parameters after each step
        model.register_forward_pre_hook(
            lambda module, args: self.forwards.append((torch.is_grad_enabled(), module.training, module[1].training)))
        optimizer.register_step_post_hook(lambda opt, args, kwargs: self._step(model))

    def _step(self, model) -> None:
        self.steps.append((model.training, model[1].training))
        self.weights.append([p.detach().clone() for p in model.parameters()])


def _run(code: str, entry: str, model, *args):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    recorder = _Recorder(model, optimizer)
    namespace: dict = {}
    exec(compile(code, "snippet.py", "exec"), namespace)
    namespace[entry](model, _data(1), _data(2), optimizer, *args)
    return recorder


def _fixed(code: str, rule) -> str:
    fixed = fix_text(code, "snippet.py", [rule]).text  # safe fixes only
    assert fixed != code, "the safe fix was not applied"
    compile(fixed, "snippet.py", "exec")
    return fixed


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


VALIDATION_IN_THE_EPOCH_LOOP = '''
import torch
from torch import nn


def fit(model, train_loader, val_loader, optimizer):
    model.train()
    for epoch in range(3):
        for x, y in train_loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        with torch.no_grad():
            for x, y in val_loader:
                val = nn.functional.mse_loss(model(x), y)
'''


def test_gl004_fix_evaluates_in_eval_mode_and_leaves_training_as_it_was():
    fixed = _fixed(VALIDATION_IN_THE_EPOCH_LOOP, EvalWithoutEvalMode)
    assert "model.train(was_training)" in fixed  # a bare eval() would leak into the next epoch
    original = _run(VALIDATION_IN_THE_EPOCH_LOOP, "fit", model := _model())
    patched = _run(fixed, "fit", patched_model := _model())
    assert all(training for training, _ in patched.steps)
    assert _same(original.weights[-1], patched.weights[-1])  # training is untouched
    evaluations = [f for f in patched.forwards if not f[0]]
    assert evaluations and not any(training for _, training, _ in evaluations)
    assert any(training for grad, training, _ in original.forwards if not grad)  # the defect it fixed
    # The evaluation no longer feeds validation batches into BatchNorm's running statistics.
    assert not torch.equal(model[1].running_mean, patched_model[1].running_mean)


EVALUATION_HELPER_INSIDE_THE_LOOP = '''
import torch
from torch import nn


def evaluate(model, loader):
    model.eval()
    with torch.no_grad():
        return [model(x) for x, _ in loader]


def fit(model, train_loader, val_loader, optimizer, freeze_bn=False):
    model.train()
    if freeze_bn:
        model[1].eval()  # keep BN frozen
    for epoch in range(3):
        for x, y in train_loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        evaluate(model, val_loader)
'''


def test_gl006_fix_trains_every_epoch_in_training_mode():
    code = EVALUATION_HELPER_INSIDE_THE_LOOP.replace("    if freeze_bn:\n        model[1].eval()  # keep BN frozen\n", "")
    fixed = _fixed(code, TrainModeNotRestored)
    original = _run(code, "fit", _model())
    patched = _run(fixed, "fit", _model())
    per_epoch = len(_data(1))
    assert [training for training, _ in original.steps][per_epoch:] == [False] * (2 * per_epoch)  # the defect
    assert all(training for training, _ in patched.steps)
    assert _same(original.weights[per_epoch - 1], patched.weights[per_epoch - 1])  # epoch 0 was right already
    assert not any(training for grad, training, _ in patched.forwards if not grad)  # evaluation still in eval


def test_gl006_fix_keeps_a_submodule_frozen_on_purpose():
    code = EVALUATION_HELPER_INSIDE_THE_LOOP.replace("    if freeze_bn:\n        model[1].eval()", "    model[1].eval()")
    fixed = _fixed(code, TrainModeNotRestored)
    assert "        model.train()\n        model[1].eval()  # keep BN frozen\n" in fixed
    patched = _run(fixed, "fit", _model())
    assert all(training and not bn_training for training, bn_training in patched.steps)


def test_gl006_fix_under_a_conditional_freeze_is_unsafe():
    """`if freeze_bn: model[1].eval()` before the loop: repeating it unconditionally would freeze BN for
    runs that did not ask for it, and a bare `model.train()` would unfreeze it for those that did."""
    assert fix_text(EVALUATION_HELPER_INSIDE_THE_LOOP, "snippet.py", [TrainModeNotRestored]).text == \
        EVALUATION_HELPER_INSIDE_THE_LOOP


CLIP_BEFORE_UNSCALE = '''
import torch
from torch import nn


def train(model, loader, unused, optimizer, scaler):
    for x, y in loader:
        optimizer.zero_grad()
        scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        scaler.step(optimizer)
        scaler.update()
'''


def _scaler():
    return torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)


def test_gl007_fix_clips_the_true_gradients():
    fixed = _fixed(CLIP_BEFORE_UNSCALE, ClipBeforeUnscale)
    assert "scaler.unscale_(optimizer)" in fixed
    unclipped = CLIP_BEFORE_UNSCALE.replace("        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)\n", "")
    reference = _run(unclipped, "train", _model(), _scaler())
    original = _run(CLIP_BEFORE_UNSCALE, "train", _model(), _scaler())
    patched = _run(fixed, "train", _model(), _scaler())
    # The true gradient norms stay far below 100: clipping them changes nothing, as the author meant...
    assert _same(patched.weights[-1], reference.weights[-1])
    # ...while the original compared 65536 times the gradients with the bound and shrank every step.
    assert not _same(original.weights[-1], reference.weights[-1])


HELPER_UNSCALES_LATER = '''
import torch
from torch import nn


def log_grad_norm(scaler, optimizer, model):
    scaler.unscale_(optimizer)
    return sum(p.grad.norm() for p in model.parameters())


def train(model, loader, unused, optimizer, scaler):
    for x, y in loader:
        optimizer.zero_grad()
        scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        log_grad_norm(scaler, optimizer, model)
        scaler.step(optimizer)
        scaler.update()
'''


def test_gl007_offers_no_fix_where_a_second_unscale_would_raise():
    assert fix_text(HELPER_UNSCALES_LATER, "snippet.py", [ClipBeforeUnscale], unsafe=True).text == HELPER_UNSCALES_LATER
    _run(HELPER_UNSCALES_LATER, "train", _model(), _scaler())  # the original runs
    naive = HELPER_UNSCALES_LATER.replace("        torch.nn.utils.clip_grad_norm_",
                                          "        scaler.unscale_(optimizer)\n        torch.nn.utils.clip_grad_norm_")
    with pytest.raises(RuntimeError, match="unscale_"):
        _run(naive, "train", _model(), _scaler())


EVALUATION_FIRST_WITHOUT_EVAL = '''
import torch
from torch import nn


def evaluate(model, loader):
    with torch.no_grad():
        return [model(x) for x, _ in loader]


def fit(model, train_loader, val_loader, optimizer):
    model.train()
    for epoch in range(3):
        evaluate(model, val_loader)
        for x, y in train_loader:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
'''


def test_gl004_and_gl006_fixes_together_never_train_in_eval_mode():
    """The combination the issue names: GL004's eval() (unsafe: it would leak into the update that follows)
    makes GL006 report the loop, whose restore must come after the evaluation, not at the top of the loop."""
    rules = [EvalWithoutEvalMode, TrainModeNotRestored]
    assert fix_text(EVALUATION_FIRST_WITHOUT_EVAL, "snippet.py", rules).text == EVALUATION_FIRST_WITHOUT_EVAL
    fixed = fix_text(EVALUATION_FIRST_WITHOUT_EVAL, "snippet.py", rules, unsafe=True).text
    assert "        evaluate(model, val_loader)\n        model.train()\n" in fixed
    patched = _run(fixed, "fit", _model())
    assert all(training for training, _ in patched.steps)
    assert not any(training for grad, training, _ in patched.forwards if not grad)
