from __future__ import annotations

from typing import Optional

import libcst as cst

from gradlint.loops import (
    BACKWARD,
    CALL,
    EVAL,
    MODE,
    STEP,
    TRAIN,
    TRAINING_STEP_TEXT,
    TRAINISH_CALLEE,
    Event,
    Loop,
    Routine,
    RoutineRule,
    callee_name,
    exclusive,
    final_mode,
    forward_target,
    key_in_callee,
    obj_key,
)
from gradlint.rule import Invalid, Valid

_MAX_DEPTH = 3


class TrainModeNotRestored(RoutineRule):
    """
    ## What it does
    Finds a training loop that puts the model in training mode once, before the loop (`model.train()`),
    and evaluates inside it, either directly (`model.eval()`) or by calling a routine of the same module
    that calls `.eval()` on the model it receives (`evaluate(model, val_loader)`, `self.validate()`), with
    nothing inside the loop switching back to training mode. Also reported: a loop that trains and calls
    `model.eval()` itself with no `.train()` anywhere (a fresh model starts in training mode, so only the
    first iteration trains correctly).

    The loop is the innermost loop that holds both the evaluation and the training (a backward or an
    optimizer step, in the loop or in a routine of the module it calls). Not reported: a `.train()` inside
    the loop (at the top of the epoch, after the evaluation, or in a training routine it calls such as
    timm's and open_clip's `train_one_epoch`), an evaluation routine that restores the mode it found
    (`model.train(was_training)`), training done by routines we cannot see.

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
    Safe: the fix inserts `model.train()` as the first statement of the loop body. The first iteration
    already ran in training mode; every later one now does too, which is what the `.train()` before the loop
    meant.

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
    ]
    INVALID = [
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
    ]

    @classmethod
    def may_match(cls, text: str) -> bool:
        """The triggers, plus, on the whole text, the training a finding needs (a backward or an optimizer
        step, in the loop or in a routine it calls). Region triggers stay `.train(`/`.eval(` alone."""
        return super().may_match(text) and bool(TRAINING_STEP_TEXT.search(text))

    def check(self, r: Routine) -> None:
        if not r.loops:
            return
        before = {t.key for t in r.of(TRAIN) if t.key and not r.is_optimizer(t.key) and t.key != "self"}
        direct_evals = {e.key for e in r.of(EVAL) if e.key and not r.is_optimizer(e.key)
                        and any(e.inside(loop) for loop in r.loops)}
        if not before and not direct_evals:
            return
        found: dict = {}  # key -> [(loop, eval event, training event, train-before event)]
        for key in sorted(before | direct_evals):
            for loop in r.loops:
                if not loop.statement:
                    continue
                verdict = self._judge(r, loop, key)
                if verdict is not None:
                    found.setdefault(key, []).append((loop, *verdict))
        for key, hits in found.items():
            for loop, evaluation, training, trained in hits:
                if any(other is not loop and loop.start < other.start and other.end < loop.end
                       for other, *_ in hits):
                    continue  # an inner loop holds both: report (and restore) there
                self._report(r, loop, key, evaluation, training, trained)

    # -- verdict ---------------------------------------------------------------------------------------
    def _judge(self, r: Routine, loop: Loop, key: str):
        """(eval event, training event, train-before event or None) when `loop` leaves `key` in eval."""
        aliases = r.aliases(key)
        inside = [e for e in r.events if e.inside(loop)]
        if any(e.kind in (TRAIN, MODE) and e.key in aliases for e in inside):
            return None
        trained = [t for t in r.of(TRAIN) if t.key in aliases and t.index < loop.start
                   and not exclusive(t.place, loop.place)]
        evals = [e for e in inside if e.kind == EVAL and e.key in aliases]
        trainings = [e for e in inside if e.kind == BACKWARD or (e.kind == STEP and r.is_optimizer_step(e))]
        calls = [e for e in inside if e.kind == CALL and isinstance(e.node.func, (cst.Name, cst.Attribute))]
        trains_it: list = []  # training routines called in the loop that receive the model
        if not trained and not evals:
            return None  # nothing set train mode before the loop, nothing evaluates directly in it
        # Calls that may run routines of this module (the evaluation, the training, a restore): see them all.
        if any(self.analysis.might_be_local(r, c) for c in calls):
            self.require_full_module()
        for c in calls:
            target = self.analysis.resolve_call(r, c)
            if target is None:
                if _passes(r, c, aliases) and TRAINISH_CALLEE.search(callee_name(c.node.func)):
                    return None  # an imported `train_one_epoch(model, ...)`: assume it sets the mode
                continue
            inner = key_in_callee(r, c, target, key)
            if inner is not None:
                mode = final_mode(self.analysis, target, inner)
                if mode in ("train", "unknown"):
                    return None
                if mode == "eval":
                    evals.append(c)
            if _trains(self.analysis, target, 0):
                trainings.append(c)
                if inner is not None:
                    trains_it.append(c)
        if not evals or not trainings:
            return None
        evaluation = min(evals, key=lambda e: e.index)
        training = min(trainings, key=lambda e: e.index)
        if trained:
            return evaluation, training, trained[-1]
        # No train() before the loop: only a loop that evaluates itself and trains the same model, here or
        # in a training routine that receives it.
        if evaluation.kind != EVAL or not (trains_it or any(
                e.kind == CALL and e.no_grad is None and forward_target(self.ctx, r, e) in aliases
                for e in inside)):
            return None
        return evaluation, training, None

    # -- report and fix --------------------------------------------------------------------------------
    def _report(self, r: Routine, loop: Loop, key: str, evaluation: Event, training: Event,
                trained: Optional[Event]) -> None:
        spelled = trained.key if trained is not None else (evaluation.key or key)
        how = (f"`{self.text(evaluation.node)}` ({self.at(evaluation.node)})")
        if trained is not None:
            message = (f"`{spelled}.train()` runs once, before this loop ({self.at(trained.node)}), but "
                       f"{how} puts `{spelled}` in eval mode inside it: from the second iteration on, the "
                       f"training step ({self.at(training.node)}) runs in eval mode")
        else:
            message = (f"{how} puts `{spelled}` in eval mode inside this loop and nothing sets it back: from "
                       f"the second iteration on, the training step ({self.at(training.node)}) runs in "
                       "eval mode")
        message += " (dropout off, BatchNorm frozen)"
        self.report(loop.node, message, self._fix(loop, spelled), statement=loop.node)

    def _fix(self, loop: Loop, key: str):
        body = loop.node.body
        if not isinstance(body, cst.IndentedBlock) or not body.body:
            return None
        statement = cst.parse_statement(f"{key}.train()\n")
        return self.insert_before(body.body[0], [statement],
                                  message=f"Call `{key}.train()` at the top of the loop body")


def _on_self(key: str) -> bool:
    return key.split(".", 1)[0] in ("self", "cls")


def _passes(r: Routine, call: Event, aliases: set) -> bool:
    func = call.node.func
    receiver = obj_key(func.value) if isinstance(func, cst.Attribute) else None
    return receiver in aliases or any(obj_key(a.value) in aliases for a in call.node.args)


def _trains(an, r: Routine, depth: int) -> bool:
    """Does routine `r` (or one it calls, a few levels down) run a backward or an optimizer step?"""
    if r.training_events():
        return True
    if depth >= _MAX_DEPTH:
        return False
    for e in r.of(CALL):
        target = an.resolve_call(r, e)
        if target is not None and target is not r and _trains(an, target, depth + 1):
            return True
    return False
