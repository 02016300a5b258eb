from __future__ import annotations

from typing import Optional

import libcst as cst

from gradlint.flow.base import TRAINING_STEP_TEXT, RoutineRule
from gradlint.flow.calls import key_in_callee
from gradlint.flow.events import CALL, EVAL, FREEZE, MODE, TRAIN, Event, Loop, Routine, obj_key
from gradlint.flow.forwards import forward_candidates
from gradlint.flow.modes import UNKNOWN_SETTERS, correlated_exclusive
from gradlint.rule import Invalid, Valid

_RESTORED = ("train", -2)  # the token of the `.train()` a fix would insert


class TrainModeNotRestored(RoutineRule):
    """
    ## What it does
    Finds a training loop in which an evaluation puts the model in eval mode and nothing puts it back before
    the training of the next iteration: on some path from the evaluation (`model.eval()` in the loop, or a
    call of a routine of this file that leaves the model in eval mode, `evaluate(model, val_loader)`,
    `self.validate()`) to a backward or optimizer step of the loop (direct, or in a training routine of this
    file it calls), no `.train()` runs. The paths are followed through branches and into helpers: an
    evaluation routine that restores `model.train()` in one branch of an `if` only (the other returns or
    falls through) leaves the model in eval mode on the other path.

    The model must be a module by the facts (`.train()`/`.eval()` on an object it also calls, a module
    built by `nn.X(...)` or a class of this file, parameters that feed the optimizer...), trained in the
    loop (`model.train()` before the loop, a forward with gradients in it, or a training routine that
    receives it), and the loop is the innermost one that holds both the evaluation and the training. Not
    reported: a `.train()` inside the loop after the evaluation or before the training (at the top of the
    epoch, in a training routine it calls such as timm's and open_clip's `train_one_epoch`), an evaluation
    routine that restores the mode it found (`model.train(was_training)`), an `.eval()` before the loop (a
    deliberate choice, such as fine-tuning with frozen BatchNorm), training done by routines we cannot see.

    ## Why is this bad?
    `.eval()` persists until something calls `.train()`. After the first evaluation every later epoch
    trains with dropout disabled and BatchNorm using (and never updating) its running statistics: the
    model overfits, regularization silently disappears, and results differ from the same run with
    evaluation turned off.

    ## Example
    ```python
    model.train()
    for epoch in range(epochs):
        for x, y in train_loader:
            ...
            loss.backward()
            optimizer.step()
        evaluate(model, val_loader)  # calls model.eval()
    ```

    ## Use instead
    ```python
    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            ...
            loss.backward()
            optimizer.step()
        evaluate(model, val_loader)
    ```

    ## Fix safety
    The fix inserts `model.train()` as the first statement of the loop body, or, when the evaluation comes
    before the training in the iteration (validate first, then train; a rollout, then the update), right
    after the statement that evaluates; on an object the facts prove to be a module. Each place is checked
    against the whole routine before it is offered: after it, every training step of the loop runs in
    training mode, and every evaluation of the loop that ran in eval mode still does; when neither place
    passes, no fix. The first
    iteration already ran in training mode and every later one now does too, which is what the code meant:
    results change only where the original trained in eval mode. A `.train()` also switches every submodule
    back: when the code freezes part of the model before the loop (`model.train(); model[0].eval()  # keep
    BN frozen`), the fix repeats those statements after the inserted call; when a submodule is frozen
    anywhere else (a helper, `model.apply(...)`, another method of the class), the fix is unsafe.

    ## Options
    None.
    """

    code = "GL006"
    name = "train-mode-not-restored"
    summary = "Evaluation inside a training loop leaves the model in eval mode for the next epoch"
    triggers = ((r"\.train\s*\(", r"\.eval\s*\("),)

    VALID = [
        Valid(
            "import torch\n\n\ndef main(model, loader_train, loader_eval, optimizer, loss_fn, args):\n"
            "    for epoch in range(args.epochs):\n"
            "        train_one_epoch(epoch, model, loader_train, optimizer, loss_fn, args)\n"
            "        eval_metrics = validate(model, loader_eval, loss_fn, args)\n\n\n"
            "def train_one_epoch(epoch, model, loader, optimizer, loss_fn, args):\n"
            "    model.train()\n"
            "    for input, target in loader:\n"
            "        loss = loss_fn(model(input), target)\n"
            "        optimizer.zero_grad()\n"
            "        loss.backward()\n"
            "        optimizer.step()\n\n\n"
            "def validate(model, loader, loss_fn, args):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        for input, target in loader:\n"
            "            output = model(input)\n",
            note="timm train.py / open_clip main.py: train_one_epoch restores training mode"),
        Valid(
            "class Trainer:\n"
            "    def _inner_training_loop(self, model, epochs):\n"
            "        model.zero_grad()\n"
            "        for epoch in range(epochs):\n"
            "            self._run_epoch(model, epoch)\n"
            "            self._maybe_log_save_evaluate(model)\n\n"
            "    def _run_epoch(self, model, epoch):\n"
            "        for inputs in self.batches:\n"
            "            loss = self.training_step(model, inputs)\n"
            "            self.optimizer.step()\n\n"
            "    def training_step(self, model, inputs):\n"
            "        model.train()\n"
            "        loss = self.compute_loss(model, inputs)\n"
            "        self.accelerator.backward(loss)\n"
            "        return loss\n\n"
            "    def _maybe_log_save_evaluate(self, model):\n"
            "        self.evaluation_loop(model)\n\n"
            "    def evaluation_loop(self, model):\n"
            "        model.eval()\n",
            note="HF Trainer: training_step calls model.train() on every step"),
        Valid(
            "import torch\n\n\ndef fit(model, train_loader, val_loader, optimizer, epochs):\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        for x, y in train_loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [model(x, y) for x, y in val_loader]\n"),
        Valid(
            "import torch\n\n\ndef evaluate(model, loader):\n"
            "    was_training = model.training\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        out = [model(x) for x in loader]\n"
            "    model.train(was_training)\n"
            "    return out\n\n\n"
            "def fit(model, loader, val_loader, opt):\n"
            "    model.train()\n"
            "    for epoch in range(3):\n"
            "        for x in loader:\n"
            "            model(x).backward()\n"
            "            opt.step()\n"
            "        evaluate(model, val_loader)\n",
            note="the evaluation routine restores the mode it found"),
        Valid(
            "def fit(model, loader, val_loader, opt, steps):\n"
            "    model.train()\n"
            "    for step, batch in enumerate(loader):\n"
            "        model(batch).backward()\n"
            "        opt.step()\n"
            "        if step % 100 == 0:\n"
            "            model.eval()\n"
            "            run_validation(model, val_loader)\n"
            "            model.train()\n",
            note="restored right after the evaluation"),
        Valid(
            "from engine import train_one_epoch, evaluate\n\n\n"
            "def main(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        train_one_epoch(model, loader, optimizer)\n"
            "        model.eval()\n"
            "        evaluate(model, val_loader)\n",
            note="training in an imported routine that we cannot see (and that likely calls train())"),
        Valid(
            "def finetune(model, loader, opt):\n"
            "    model.eval()  # keep BatchNorm statistics frozen\n"
            "    for x in loader:\n"
            "        model(x).backward()\n"
            "        opt.step()\n",
            note="eval before the loop, on purpose"),
        Valid(
            "import torch\n\n\ndef train_model(model, dataloaders, criterion, optimizer, epochs):\n"
            "    for epoch in range(epochs):\n"
            "        for phase in ['train', 'val']:\n"
            "            if phase == 'train':\n"
            "                model.train()\n"
            "            else:\n"
            "                model.eval()\n"
            "            for inputs, labels in dataloaders[phase]:\n"
            "                optimizer.zero_grad()\n"
            "                with torch.set_grad_enabled(phase == 'train'):\n"
            "                    loss = criterion(model(inputs), labels)\n"
            "                    if phase == 'train':\n"
            "                        loss.backward()\n"
            "                        optimizer.step()\n",
            note="the PyTorch transfer-learning tutorial: the mode follows the phase; `if phase == 'train'` "
                 "selects the same arm for the mode and the step"),
        Valid(
            "class Pruner:\n"
            "    def prune(self, iterations):\n"
            "        self.model.train()\n"
            "        for _ in range(iterations):\n"
            "            self.rank_filters()\n"
            "            self.test()\n\n"
            "    def rank_filters(self):\n"
            "        self.model.train()\n"
            "        for x, y in self.loader:\n"
            "            self.model(x, y).backward()\n\n"
            "    def test(self):\n"
            "        self.model.eval()\n"
            "        for x, y in self.loader:\n"
            "            self.model(x, y)\n",
            note="the training routine the loop calls puts the model in train mode itself"),
        Valid(
            "import torch\n\n\ndef main(model, loader, val_loader, optimizer, criterion, args):\n"
            "    for epoch in range(args.epochs):\n"
            "        if args.weights == 'finetune':\n            model.train()\n"
            "        elif args.weights == 'freeze':\n            model.eval()\n"
            "        else:\n            assert False\n"
            "        for images, target in loader:\n"
            "            loss = criterion(model(images), target)\n"
            "            optimizer.zero_grad()\n            loss.backward()\n            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            for images, target in val_loader:\n                model(images)\n",
            note="barlowtwins' linear evaluation: each epoch sets the mode it trains in (eval() freezes the "
                 "backbone's BatchNorm on purpose), and `assert False` ends the other path"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef fit(model, loader, val_loader, opt, epochs):\n    model.train()\n"
            "    for epoch in range(epochs):\n        model.eval()\n        with torch.no_grad():\n"
            "            for x, y in val_loader:\n                model(x)\n"
            "        for x, y in loader:\n            opt.zero_grad()\n            model(x).sum().backward()\n"
            "            opt.step()\n",
            None, note="an evaluation (a forward without gradients) between the eval() and the training: not "
                       "the mode chosen for training"),
        Invalid(
            "import torch\n\n\ndef evaluate(model, loader):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        return sum(model(x).sum() for x in loader)\n\n\n"
            "def train(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        # one pass over the data\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        evaluate(model, val_loader)\n",
            "import torch\n\n\ndef evaluate(model, loader):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        return sum(model(x).sum() for x in loader)\n\n\n"
            "def train(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        # one pass over the data\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        evaluate(model, val_loader)\n"),
        Invalid(
            "import torch\n\n\ndef train(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [model(x, y) for x, y in val_loader]\n",
            "import torch\n\n\ndef train(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [model(x, y) for x, y in val_loader]\n"),
        Invalid(
            "import torch\n\n\ndef train(net, loader, val_loader, optimizer, epochs):\n"
            "    for epoch in range(epochs):\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            net(x, y).backward()\n"
            "            optimizer.step()\n"
            "        net.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [net(x, y) for x, y in val_loader]\n",
            "import torch\n\n\ndef train(net, loader, val_loader, optimizer, epochs):\n"
            "    for epoch in range(epochs):\n"
            "        net.train()\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            net(x, y).backward()\n"
            "            optimizer.step()\n"
            "        net.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [net(x, y) for x, y in val_loader]\n",
            note="never set back: a new model starts in train mode, so only epoch 0 trains correctly"),
        Invalid(
            "def validate(model, loader):\n"
            "    model.eval()\n"
            "    return [model(b) for b in loader]\n\n\n"
            "def fit(model, loader, val_loader, opt):\n"
            "    model.train()\n"
            "    step = 0\n"
            "    while step < 1000:\n"
            "        for batch in loader:\n"
            "            model(batch).backward()\n"
            "            opt.step()\n"
            "            step += 1\n"
            "            if step % 100 == 0:\n"
            "                validate(model, val_loader)\n",
            "def validate(model, loader):\n"
            "    model.eval()\n"
            "    return [model(b) for b in loader]\n\n\n"
            "def fit(model, loader, val_loader, opt):\n"
            "    model.train()\n"
            "    step = 0\n"
            "    while step < 1000:\n"
            "        for batch in loader:\n"
            "            model.train()\n"
            "            model(batch).backward()\n"
            "            opt.step()\n"
            "            step += 1\n"
            "            if step % 100 == 0:\n"
            "                validate(model, val_loader)\n",
            note="periodic validation inside the step loop: the step loop is restored"),
        Invalid(
            "class Trainer:\n"
            "    def fit(self, epochs):\n"
            "        for epoch in range(epochs):\n"
            "            self.train_epoch()\n"
            "            self.model.eval()\n"
            "            self.validate()\n\n"
            "    def train_epoch(self):\n"
            "        for batch in self.loader:\n"
            "            self.model(batch).backward()\n"
            "            self.optimizer.step()\n"
            "            self.optimizer.zero_grad()\n",
            "class Trainer:\n"
            "    def fit(self, epochs):\n"
            "        for epoch in range(epochs):\n"
            "            self.model.train()\n"
            "            self.train_epoch()\n"
            "            self.model.eval()\n"
            "            self.validate()\n\n"
            "    def train_epoch(self):\n"
            "        for batch in self.loader:\n"
            "            self.model(batch).backward()\n"
            "            self.optimizer.step()\n"
            "            self.optimizer.zero_grad()\n",
            note="never set back, and the training routine does not call train() either"),
        Invalid(
            "class Trainer:\n"
            "    def fit(self, epochs):\n"
            "        self.model.train()\n"
            "        for epoch in range(epochs):\n"
            "            for batch in self.loader:\n"
            "                self.train_step(batch)\n"
            "            self.validate()\n\n"
            "    def train_step(self, batch):\n"
            "        loss = self.model(batch)\n"
            "        loss.backward()\n"
            "        self.optimizer.step()\n"
            "        self.optimizer.zero_grad()\n\n"
            "    def validate(self):\n"
            "        self.model.eval()\n"
            "        for batch in self.val_loader:\n"
            "            self.model(batch)\n",
            "class Trainer:\n"
            "    def fit(self, epochs):\n"
            "        self.model.train()\n"
            "        for epoch in range(epochs):\n"
            "            self.model.train()\n"
            "            for batch in self.loader:\n"
            "                self.train_step(batch)\n"
            "            self.validate()\n\n"
            "    def train_step(self, batch):\n"
            "        loss = self.model(batch)\n"
            "        loss.backward()\n"
            "        self.optimizer.step()\n"
            "        self.optimizer.zero_grad()\n\n"
            "    def validate(self):\n"
            "        self.model.eval()\n"
            "        for batch in self.val_loader:\n"
            "            self.model(batch)\n",
            note="methods: the training step and the evaluation are both helpers"),
        Invalid(
            "import torch\n\n\ndef validate(model, loader, writer, step):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        loss = sum(model(x).sum() for x in loader)\n"
            "    if writer is not None:\n"
            "        writer.add_scalar('val/loss', loss, step)\n"
            "        model.train()\n"
            "        return loss\n"
            "    return loss\n\n\n"
            "def fit(model, loader, val_loader, optimizer, epochs, writer=None):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        validate(model, val_loader, writer, epoch)\n",
            "import torch\n\n\ndef validate(model, loader, writer, step):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        loss = sum(model(x).sum() for x in loader)\n"
            "    if writer is not None:\n"
            "        writer.add_scalar('val/loss', loss, step)\n"
            "        model.train()\n"
            "        return loss\n"
            "    return loss\n\n\n"
            "def fit(model, loader, val_loader, optimizer, epochs, writer=None):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        validate(model, val_loader, writer, epoch)\n",
            note="a conditional restore: validate() calls train() only when it logs; without a writer the "
                 "model stays in eval mode"),
        Invalid(
            "import torch\n\n\ndef fit(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    model[0].eval()  # keep BN frozen\n"
            "    for epoch in range(epochs):\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [model(x, y) for x, y in val_loader]\n",
            "import torch\n\n\ndef fit(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    model[0].eval()  # keep BN frozen\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        model[0].eval()  # keep BN frozen\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [model(x, y) for x, y in val_loader]\n",
            note="a submodule frozen on purpose after train(): the fix freezes it again"),
        Invalid(
            "import torch\n\n\ndef freeze_bn(model):\n"
            "    for m in model.modules():\n"
            "        m.eval()\n\n\n"
            "def fit(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    freeze_bn(model.backbone)\n"
            "    for epoch in range(epochs):\n"
            "        for x, y in loader:\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [model(x, y) for x, y in val_loader]\n",
            "import torch\n\n\ndef freeze_bn(model):\n"
            "    for m in model.modules():\n"
            "        m.eval()\n\n\n"
            "def fit(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    freeze_bn(model.backbone)\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        for x, y in loader:\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            val = [model(x, y) for x, y in val_loader]\n",
            unsafe=True, note="part of the model frozen by a helper: train() would undo it, the fix is unsafe"),
        Invalid(
            "import torch\n\n\ndef evaluate(model, loader):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x, _ in loader]\n\n\n"
            "def fit(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        scores = evaluate(model, val_loader)\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n",
            "import torch\n\n\ndef evaluate(model, loader):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x, _ in loader]\n\n\n"
            "def fit(model, loader, val_loader, optimizer, epochs):\n"
            "    model.train()\n"
            "    for epoch in range(epochs):\n"
            "        scores = evaluate(model, val_loader)\n"
            "        model.train()\n"
            "        for x, y in loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n",
            note="the evaluation comes first in the iteration: train() at the top would be too early, it goes "
                 "right after the evaluation"),
    ]

    @classmethod
    def may_match(cls, text: str) -> bool:
        """The triggers, plus, on the whole text, the training a finding needs (a backward or an optimizer
        step, in the loop or in a routine it calls). Region triggers stay `.train(`/`.eval(` alone."""
        return super().may_match(text) and bool(TRAINING_STEP_TEXT.search(text))

    def check(self, r: Routine) -> None:
        if not r.loops:
            return
        before = {t.key for t in r.of(TRAIN) if t.key and t.key != "self"}
        direct_evals = {e.key for e in r.of(EVAL) if e.key and any(e.inside(loop) for loop in r.loops)}
        candidates = sorted(before | direct_evals)
        if not candidates:
            return
        facts = self.facts
        for key in candidates:
            if not facts.is_module(r, key):
                continue
            hits = []
            for loop in r.loops:
                if loop.statement:
                    verdict = self._judge(r, loop, key)
                    if verdict is not None:
                        hits.append((loop, *verdict))
            for loop, evaluation, training, trained in hits:
                if any(other is not loop and loop.start < other.start and other.end < loop.end
                       for other, *_ in hits):
                    continue  # an inner loop holds both: report (and restore) there
                self._report(r, loop, key, evaluation, training, trained)

    # -- verdict ---------------------------------------------------------------------------------------
    def _judge(self, r: Routine, loop: Loop, key: str):
        """(evaluation event, training event, train-before event or None) when an evaluation in `loop` leaves
        `key` in eval mode for a training step of the next iteration."""
        trainings = [t for t in self.modes.training_events(r) if t.inside(loop)]
        if not trainings:
            return None
        modes = self.modes.observe(r, key)
        leak = None
        for t in trainings:
            if t.kind == CALL and not self.modes.trains_from_entry(r, t, key):
                continue  # a training routine that calls `.train()` itself first
            origins = [o for m, o in modes.get(t.index, ()) if m == "eval" and loop.start < o < loop.end
                       and not correlated_exclusive(self.ctx, r, self._event(r, o), t)
                       and not self._mode_for_training(r, key, self._event(r, o), t)]
            if origins:
                leak = (min(origins), t)
                break
        if leak is None:
            return None
        aliases = r.aliases(key)
        trained = [t for t in r.of(TRAIN) if t.key in aliases and t.index < loop.start]
        if not trained and not self._trains_it(r, loop, key, aliases):
            return None
        evaluation = next(e for e in r.events if e.index == leak[0])
        return evaluation, leak[1], trained[-1] if trained else None

    @staticmethod
    def _event(r: Routine, index: int) -> Event:
        return next(e for e in r.events if e.index == index)

    def _mode_for_training(self, r: Routine, key: str, origin: Event, training: Event) -> bool:
        """An `.eval()` earlier in the iteration than the training step, with no evaluation between them,
        is the mode that step is meant to run in (`if args.weights == 'freeze': model.eval()` at the top of
        the epoch, barlowtwins' linear evaluation), not an evaluation that leaks into the next epoch. An
        evaluation between: a forward of the model without gradients, or the model handed to a routine
        that does not train it (or that cannot be seen)."""
        if origin.kind != EVAL or origin.index > training.index:
            return False
        aliases = r.aliases(key)
        for e in r.events:
            if not origin.index < e.index < training.index or e.kind != CALL:
                continue
            if e.no_grad is not None and any(k in aliases for k, _ in forward_candidates(r, e)):
                return False
            target = self.analysis.resolve_call(r, e)
            if target is None:
                if any(_names_key(arg.value, aliases) for arg in getattr(e.node, "args", ())):
                    return False
            elif key_in_callee(r, e, target, key) is not None and not self.modes.trains(target):
                return False
        return True

    def _trains_it(self, r: Routine, loop: Loop, key: str, aliases: set) -> bool:
        """Is the model trained in the loop: a forward with gradients, or a training routine handed it?"""
        for e in r.of(CALL):
            if not e.inside(loop):
                continue
            if e.no_grad is None and any(k in aliases for k, _ in forward_candidates(r, e)):
                return True
            target = self.analysis.resolve_call(r, e)
            if target is not None and key_in_callee(r, e, target, key) is not None and self.modes.trains(target):
                return True
        return False

    # -- report and fix --------------------------------------------------------------------------------
    def _report(self, r: Routine, loop: Loop, key: str, evaluation: Event, training: Event,
                trained: Optional[Event]) -> None:
        spelled = trained.key if trained is not None else (evaluation.key if evaluation.kind == EVAL else key)
        how = f"`{self.text(evaluation.node)}` ({self.at(evaluation.node)})"
        if trained is not None:
            message = (f"`{spelled}.train()` runs once, before this loop ({self.at(trained.node)}), but "
                       f"{how} puts `{spelled}` in eval mode inside it: from the second iteration on, the "
                       f"training step ({self.at(training.node)}) runs in eval mode")
        else:
            message = (f"{how} puts `{spelled}` in eval mode inside this loop and nothing sets it back: from "
                       f"the second iteration on, the training step ({self.at(training.node)}) runs in "
                       "eval mode")
        message += " (dropout off, BatchNorm frozen)"
        self.report(loop.node, message, self._fix(r, loop, key, spelled, evaluation), statement=loop.node)

    def _fix(self, r: Routine, loop: Loop, key: str, spelled: str, evaluation: Event):
        """`model.train()` at the top of the loop body, or, when the evaluation comes before the training in
        the iteration (a rollout or validation first, then the update), right after the evaluation: the
        first of the two that the whole routine, simulated with it, shows to be right."""
        body = loop.node.body
        if not isinstance(body, cst.IndentedBlock) or not body.body:
            return None
        refreeze, safe = self._refreeze(r, loop, key)
        statements = [cst.parse_statement(f"{spelled}.train()\n"), *refreeze]
        suffix = " and freeze again what the code froze after its first `.train()`" if refreeze else ""
        top = next((e.index for e in r.events if e.inside(loop) and loop in e.place.loops), None)
        if top is not None and self._restores(r, loop, key, top):
            return self.insert_before(body.body[0], statements, safe=safe,
                                      message=f"Call `{spelled}.train()` at the top of the loop body{suffix}")
        stmt = evaluation.stmt
        after = max((e.index for e in r.events if any(s is stmt for s in e.place.stmts)), default=None)
        following = next((e.index for e in r.events if after is not None and e.index > after and e.inside(loop)), None)
        if isinstance(stmt, cst.SimpleStatementLine) and following is not None and \
                self._restores(r, loop, key, following):
            return self.rewrite({stmt: cst.FlattenSentinel([stmt, *statements])}, safe=safe,
                                message=f"Call `{spelled}.train()` after the evaluation{suffix}")
        return None

    def _restores(self, r: Routine, loop: Loop, key: str, at: int) -> bool:
        """Simulated with `.train()` just before event `at`: every training step of the loop runs in training
        mode, and every evaluation of the loop that ran in eval mode still does."""
        fixed = self.modes.observe(r, key, {at: _RESTORED})
        original = self.modes.observe(r, key)
        aliases = r.aliases(key)
        for t in self.modes.training_events(r):
            if t.kind == CALL and not self.modes.trains_from_entry(r, t, key):
                continue
            if t.inside(loop) and any(m == "eval" and loop.start < o < loop.end and not correlated_exclusive(
                    self.ctx, r, self._event(r, o), t) for m, o in fixed.get(t.index, ())):
                return False
        for e in r.of(CALL):
            if e.inside(loop) and e.no_grad is not None and any(k in aliases for k, _ in forward_candidates(r, e)):
                was = original.get(e.index, frozenset())
                if was and all(m == "eval" for m, _ in was) and _RESTORED in fixed.get(e.index, ()):
                    return False  # the inserted call would undo the eval() an evaluation relies on
        return True

    def _refreeze(self, r: Routine, loop: Loop, key: str) -> tuple:
        """(statements to repeat after the inserted `.train()`, safe?): what the code does to submodules of
        `key` before the loop (`model.backbone.eval()`, `model[0].requires_grad_(False)`), repeated when each
        is a statement of its own that runs whenever the loop does; a submodule frozen elsewhere (under a
        condition, in a helper, in another method) makes the fix unsafe."""
        statements, safe = [], True
        same = {a for a in r.aliases(key) if not key.startswith(a + ".")}  # not `self` for `self.model`
        prefixes = {a + "." for a in same} | {a + "[" for a in same}

        def sub(k: Optional[str]) -> bool:
            return bool(k) and any(k.startswith(p) for p in prefixes)

        for e in r.events:
            if e.kind in (EVAL, MODE, FREEZE) and sub(e.key) and not e.inside(loop):
                stmt = e.stmt
                if e.index < loop.start and e.place.branches == loop.place.branches and \
                        e.place.loops == loop.place.loops and isinstance(stmt, cst.SimpleStatementLine) and \
                        len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Expr) and stmt.body[0].value is e.node:
                    statements.append(stmt.with_changes(leading_lines=()))
                else:
                    safe = False
            elif e.kind == CALL and not e.inside(loop) and e.index < loop.start:
                func = e.node.func
                receiver = obj_key(func.value) if isinstance(func, cst.Attribute) else None
                handed = any(k in same or sub(k) for k in (receiver, *(obj_key(a.value) for a in e.node.args)))
                if handed and (callee(func) == "apply" or UNKNOWN_SETTERS.search(callee(func))):
                    safe = False
                target = self.analysis.resolve_call(r, e)
                if handed and target is not None and any(x.kind in (EVAL, FREEZE) for x in target.events):
                    safe = False  # a helper that freezes part of the model
        facts = self.facts
        for m in facts._scope_routines(r, key):
            if m is r:
                continue
            if any(x.kind in (EVAL, FREEZE) and sub(x.key) for x in m.events):
                safe = False
        return statements, safe


def callee(func) -> str:
    if isinstance(func, cst.Attribute):
        return func.attr.value
    if isinstance(func, cst.Name):
        return func.value
    return ""


def _names_key(expr: cst.BaseExpression, aliases: set) -> bool:
    """Whether an argument is the object itself (`model`, `self.model`)."""
    return obj_key(expr) in aliases
