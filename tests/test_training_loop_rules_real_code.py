"""GL004–GL007 fixes and settings on small snippets. Every finding of these rules on real code is judged
in `tests/verdicts/` and checked by `tests/test_precision_suite.py`.
"""

from __future__ import annotations

from gradlint.engine import fix_text, lint_text
from gradlint.rules.clip_before_unscale import ClipBeforeUnscale
from gradlint.rules.eval_without_eval_mode import EvalWithoutEvalMode
from gradlint.rules.step_without_clipping import StepWithoutClipping
from gradlint.rules.train_mode_not_restored import TrainModeNotRestored

# Imported directly: the registry would import every other rule of the tree, finished or not.
RULES = (EvalWithoutEvalMode, StepWithoutClipping, TrainModeNotRestored, ClipBeforeUnscale)


def test_max_norm_option_sets_the_bound():
    code = ("import torch\nfrom torch.nn.utils import clip_grad_norm_\n\n\n"
            "def train(loader, optimizer):\n"
            "    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1))\n"
            "    model.train()\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        model(x, y).backward()\n"
            "        optimizer.step()\n")
    options = {"step-without-clipping": {"max-norm": 0.5}}
    assert fix_text(code, "x.py", [StepWithoutClipping], options).text == code  # the clip is an unsafe fix
    fixed = fix_text(code, "x.py", [StepWithoutClipping], options, unsafe=True)
    assert "        clip_grad_norm_(model.parameters(), max_norm=0.5)\n" in fixed.text


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
            "def evaluate(model: torch.nn.Module, val_loader):\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x in val_loader]  # noqa: GL004\n\n\n"
            "def step(model, loss, optimizer, max_grad_norm):\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()  # noqa: GL005\n")
    assert [f.code for f in lint_text(code, "x.py", list(RULES))] == []
    assert sorted(f.code for f in lint_text(code.replace("# noqa", "#"), "x.py", list(RULES))) == [
        "GL004", "GL005", "GL006", "GL007"]
