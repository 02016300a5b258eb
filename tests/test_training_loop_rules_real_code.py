"""GL004–GL007 fixes and settings: on real training code (open_clip, Lightning, as pinned in
`benchmarks/corpus.py`; skipped without the download) and on small snippets. Every finding of these rules
on real code is judged in `tests/verdicts/` and checked by `tests/test_precision_suite.py`.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.corpus import CorpusUnavailable, corpus_dir
from gradlint.engine import fix_text, lint_text
from gradlint.rules.clip_before_unscale import ClipBeforeUnscale
from gradlint.rules.eval_without_eval_mode import EvalWithoutEvalMode
from gradlint.rules.step_without_clipping import StepWithoutClipping
from gradlint.rules.train_mode_not_restored import TrainModeNotRestored

# Imported directly: the registry would import every other rule of the tree, finished or not.
RULES = (EvalWithoutEvalMode, StepWithoutClipping, TrainModeNotRestored, ClipBeforeUnscale)


def _root(corpus: str) -> str:
    try:
        return str(corpus_dir(corpus))
    except CorpusUnavailable as error:
        pytest.skip(f"corpus {corpus} unavailable: {error}")


def _read(root: str, rel: str) -> str:
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def test_open_clip_zero_shot_fix_puts_the_model_in_eval_mode():
    root = _root("open_clip")
    rel = "open_clip_train/zero_shot.py"
    text = _read(root, rel)
    fixed = fix_text(text, rel, list(RULES)).text  # safe fixes only: run() does not train
    before, after = text.splitlines(), fixed.splitlines()
    assert len(after) == len(before) + 1
    assert after[21:23] == ["    model.eval()", "    with torch.inference_mode():"]


def test_lightning_demo_fix_clips_through_lightning():
    root = _root("lightning")
    rel = "lightning/pytorch/demos/boring_classes.py"
    fixed = fix_text(_read(root, rel), rel, list(RULES)).text
    assert ('        self.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")\n'
            "        opt.step()\n") in fixed


def test_max_norm_option_sets_the_bound():
    code = ("import torch\n\n\ndef train(model, loader, optimizer):\n"
            "    model.train()\n"
            "    for x, y in loader:\n"
            "        model(x, y).backward()\n"
            "        optimizer.step()\n")
    fixed = fix_text(code, "x.py", [StepWithoutClipping], {"step-without-clipping": {"max-norm": 0.5}})
    assert "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)\n" in fixed.text


def test_noqa_on_the_reported_statement_silences_each_rule():
    code = ("import torch\n\n\ndef fit(model, loader, val_loader, optimizer, scaler):\n"
            "    model.train()\n"
            "    for epoch in range(3):  # noqa: GL006\n"
            "        for x, y in loader:\n"
            "            scaler.scale(model(x, y)).backward()\n"
            "            torch.nn.utils.clip_grad_norm_(  # noqa: GL007\n"
            "                model.parameters(), 1.0)\n"
            "            scaler.step(optimizer)\n"
            "            scaler.update()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [model(x) for x in val_loader]\n\n\n"
            "def evaluate(model, val_loader):\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x in val_loader]  # noqa: GL004\n\n\n"
            "def step(model, loss, optimizer):\n"
            "    loss.backward()\n"
            "    optimizer.step()  # noqa: GL005\n")
    assert [f.code for f in lint_text(code, "x.py", list(RULES))] == []
    assert sorted(f.code for f in lint_text(code.replace("# noqa", "#"), "x.py", list(RULES))) == [
        "GL004", "GL005", "GL006", "GL007"]
