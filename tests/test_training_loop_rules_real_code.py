"""GL004–GL007 on real training code: open_clip's `open_clip_train/train.py`, the HF `Trainer`, Lightning's
loops and Fabric, then every file of open_clip, timm, transformers and Lightning as pinned in
`benchmarks/corpus.py` (downloaded once into a cache outside the repository; the tests skip without it).

The training loops are the negatives the rules were written against: clipping behind a flag
(`if args.grad_clip_norm is not None`), AMP with and without a GradScaler, evaluation in a helper of
another module, a backward in `training_step` and the step in the loop that calls it, Lightning's
closures. Each finding below was read in its file and judged; the comment beside it is the verdict.
`CORRECT` must be found exactly; anything else is a new finding and fails, so a change that makes a rule
noisier on real code is seen here. Files with findings are fixed with `--unsafe-fixes` semantics: the result
must compile and a second fix must change nothing. The training-loop files are also fixed when clean
(nothing may change) and checked with and without region reduction.

Cost, measured on two cores: about 12 s for the whole file. Of the 3516 files, 106 pass the rules'
prefilter (46 of transformers' 2912); the others are skipped before any parse, as the CLI skips them.
Marked `slow` (`-m "not slow"` leaves the corpus tests out).
"""

from __future__ import annotations

import os
from functools import cache

import pytest
from realcode import lint_and_fix, scan

from benchmarks.corpus import CorpusUnavailable, corpus_dir
from gradlint.engine import active_rules, fix_text, lint_text
from gradlint.rules.clip_before_unscale import ClipBeforeUnscale
from gradlint.rules.eval_without_eval_mode import EvalWithoutEvalMode
from gradlint.rules.step_without_clipping import StepWithoutClipping
from gradlint.rules.train_mode_not_restored import TrainModeNotRestored

# Imported directly: the registry would import every other rule of the tree, finished or not.
RULES = (EvalWithoutEvalMode, StepWithoutClipping, TrainModeNotRestored, ClipBeforeUnscale)
CODES = tuple(rule.code for rule in RULES)
CORPORA = ("open_clip", "timm", "transformers", "lightning")

# (file, row, code) -> verdict. The pinned packages hold no finding of these rules: each was read in its
# file when it was reported. open_clip's `zero_shot.py` run() is handed its model by callers that put it in
# eval mode first (a library function leaves the mode to its caller); Lightning's demo
# `ManualOptimBoringModel` steps without clipping, and nothing in it says clipping is wanted.
CORRECT: dict = {"open_clip": {}, "timm": {}, "transformers": {}, "lightning": {}}

# The training loops the rules must read right, and what they report there (a subset of CORRECT).
TRAINING_LOOPS = {
    "open_clip": {
        # train_one_epoch: model.train(), dist_model.eval() under `if args.distill`, a no_grad feature cache
        # in train mode for gradient accumulation, backward in a helper, clipping behind
        # `args.grad_clip_norm`, unscale_ inside that `if`, horovod's order; evaluate(): eval() then
        # `model = model.module`, inference_mode.
        "open_clip_train/train.py": set(),
        # the epoch loop calls train_one_epoch (which calls model.train()) and evaluate()
        "open_clip_train/main.py": set(),
        # run() and zero_shot_eval() evaluate a model their callers (train.py's evaluate()) put in eval mode
        "open_clip_train/zero_shot.py": set(),
    },
    "transformers": {
        # _run_epoch: step with the backward in training_step (no finding), clipping behind max_grad_norm;
        # training_step calls model.train() each step; prediction_step's only call site follows
        # model.eval() in evaluation_loop; Seq2SeqTrainer.prediction_step is a Trainer hook.
        "transformers/trainer.py": set(),
        "transformers/trainer_seq2seq.py": set(),
        "transformers/trainer_pt_utils.py": set(),
    },
    "lightning": {
        **{f"lightning/pytorch/loops/{name}": set() for name in (
            "fit_loop.py", "training_epoch_loop.py", "evaluation_loop.py", "prediction_loop.py", "loop.py",
            "utilities.py", "optimization/automatic.py", "optimization/manual.py", "optimization/closure.py")},
        "lightning/fabric/fabric.py": set(),
        "lightning/pytorch/core/module.py": set(),
        # ManualOptimBoringModel: manual optimization without clipping, and nothing asks for it
        "lightning/pytorch/demos/boring_classes.py": set(),
    },
    "timm": {
        # NativeScaler: scale().backward(), unscale_ then dispatch_clip_grad behind `clip_grad`
        "timm/utils/cuda.py": set(),
        # distillation tasks keep the teacher in eval in __init__/train() overrides
        "timm/task/distillation.py": set(),
        "timm/task/token_distillation.py": set(),
        "timm/task/classification.py": set(),
    },
}


def _root(corpus: str) -> str:
    try:
        return str(corpus_dir(corpus))
    except CorpusUnavailable as error:
        pytest.skip(f"corpus {corpus} unavailable: {error}")


def _read(root: str, rel: str) -> str:
    with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _check_file(job: tuple[str, str]):
    """(relative path, [(row, code)], problem with its fix or None), linting then fixing one file."""
    root, rel = job
    text = _read(root, rel)
    rules = list(RULES)
    if not active_rules(text, rules):
        return rel, [], None
    return (rel, *lint_and_fix(text, rel, rules, CODES))


@cache
def _results(corpus: str):
    root = _root(corpus)
    jobs = [(root, str(p.relative_to(root))) for p in sorted(corpus_dir(corpus).rglob("*.py"))]
    return scan(_check_file, jobs)


@pytest.mark.slow
@pytest.mark.parametrize("corpus", CORPORA)
def test_findings_on_real_code_are_the_judged_ones(corpus):
    found, _ = _results(corpus)
    correct = CORRECT[corpus]
    missing = sorted(set(correct) - found)
    unexpected = sorted(found - set(correct))
    assert not missing, f"judged-correct findings no longer reported: {missing}"
    assert not unexpected, f"new findings on {corpus}, judge them and add them here: {unexpected}"


@pytest.mark.slow
@pytest.mark.parametrize("corpus", CORPORA)
def test_no_crash_and_unsafe_fixes_compile_and_are_idempotent(corpus):
    _, problems = _results(corpus)
    assert problems == {}


_LOOP_FILES = [(corpus, rel) for corpus, files in TRAINING_LOOPS.items() for rel in files]


@pytest.mark.slow
@pytest.mark.parametrize("corpus, rel", _LOOP_FILES, ids=[rel for _, rel in _LOOP_FILES])
def test_training_loops(corpus, rel):
    """The exact findings on each training loop, the same with and without region reduction; fixing
    (with unsafe fixes) gives code that compiles, and fixing again changes nothing."""
    text = _read(_root(corpus), rel)
    rules = list(RULES)
    full = lint_text(text, rel, rules, reduce=False)
    assert {(f.location.row, f.code) for f in full} == TRAINING_LOOPS[corpus][rel]
    assert lint_text(text, rel, rules, force_reduce=True) == full
    fixed = fix_text(text, rel, rules, unsafe=True)
    compile(fixed.text, rel, "exec")
    assert fix_text(fixed.text, rel, rules, unsafe=True).text == fixed.text
    if not full:
        assert fixed.text == text


def test_max_norm_option_sets_the_bound():
    code = ("import torch\nfrom torch.nn.utils import clip_grad_norm_\n\n\n"
            "def train(model, loader, optimizer):\n"
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
