from __future__ import annotations

import libcst as cst

from gradlint.loops import (
    BACKWARD,
    CLIP,
    SCHEDULER_NAME,
    STEP,
    UNSCALE,
    Event,
    Routine,
    RoutineRule,
    exclusive,
    identify_model,
    last_segment,
    root_of,
)
from gradlint.nodes import format_number
from gradlint.rule import Invalid, Option, Valid

_PARAM_GROUPS = '[p for group in {opt}.param_groups for p in group["params"]]'


class StepWithoutClipping(RoutineRule):
    """
    ## What it does
    Finds optimizer steps (`optimizer.step()`, `scaler.step(optimizer)`) that apply gradients from a
    backward pass (`loss.backward()`, `scaler.scale(loss).backward()`, `accelerator.backward(loss)`,
    `fabric.backward(loss)`, `self.manual_backward(loss)`) of the same routine with no gradient clipping in
    between, on any path that runs both.

    Clipping is `torch.nn.utils.clip_grad_norm_`/`clip_grad_value_`, `accelerator.clip_grad_norm_`,
    `fabric.clip_gradients`, Lightning's `self.clip_gradients`, or a project helper whose name says it
    (`dispatch_clip_grad`, `self._clip_grad_norm(model)`). Clipping under a condition
    (`if args.clip_grad: ...`) counts: the switch is the user's. Not reported: a step with no backward in
    its routine (the backward is in a helper, as in the HF `Trainer`), steps with a closure (LBFGS,
    Lightning's automatic optimization), `scheduler.step()`, engines that clip themselves (DeepSpeed's
    `engine.step()`).

    ## Why is this bad?
    One outlier batch (a long sequence, a label error, a loss spike early in warmup) produces a gradient
    orders of magnitude larger than usual; without clipping, that single step moves the weights far away
    and training diverges or turns NaN. Clipping bounds the damage of any one step.

    ## Example
    ```python
    for x, y in loader:
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ```

    ## Use instead
    ```python
    for x, y in loader:
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
    ```
    Under a GradScaler the gradients are unscaled first (`scaler.unscale_(optimizer)`), or the threshold
    would apply to scaled gradients; with Accelerate, Fabric and Lightning the fix calls their clipping
    method, which unscales for you.

    ## Fix safety
    The fix inserts the clip before the step. It is safe when the model is identified: the object whose
    `.parameters()` built the optimizer, else the one object put in `.train()` mode, else the one network
    called with the batch. When it cannot be identified, the fix clips the optimizer's own parameter groups
    and is unsafe (the guess may differ from what the author meant to clip). A step after a scaled backward
    that does not go through `scaler.step` gets no fix: that code has a bigger problem to solve first.

    ## Options
    - `max-norm` (default `1.0`): the `max_norm` the fix passes.
    """

    code = "GL005"
    name = "step-without-clipping"
    summary = "Optimizer step after backward with no gradient clipping in between"
    triggers = ((r"backward",), (r"\.step\s*\(",))
    options = (Option("max-norm", 1.0, "max_norm passed by the inserted clip_grad_norm_ call."),)

    VALID = [
        Valid(
            "import torch\n\n\ndef train(model, loader, optimizer, scaler, args):\n"
            "    for images, texts in loader:\n"
            "        loss = model(images, texts)\n"
            "        if scaler is not None:\n"
            "            scaler.scale(loss).backward()\n"
            "            if args.grad_clip_norm is not None:\n"
            "                scaler.unscale_(optimizer)\n"
            "                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)\n"
            "            scaler.step(optimizer)\n"
            "            scaler.update()\n"
            "        else:\n"
            "            loss.backward()\n"
            "            if args.grad_clip_norm is not None:\n"
            "                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm)\n"
            "            optimizer.step()\n",
            note="open_clip train.py: clipping behind a flag, AMP and plain branches"),
        Valid(
            "import torch\n\n\ndef backward(total_loss, scaler):\n"
            "    if scaler is not None:\n"
            "        scaler.scale(total_loss).backward()\n"
            "    else:\n"
            "        total_loss.backward()\n",
            note="open_clip: a backward helper, the step is elsewhere"),
        Valid(
            "from timm.utils import dispatch_clip_grad\n\n\n"
            "def train_one_epoch(model, loader, optimizer, loss_fn, args, loss_scaler=None):\n"
            "    model.train()\n"
            "    for input, target in loader:\n"
            "        loss = loss_fn(model(input), target)\n"
            "        optimizer.zero_grad()\n"
            "        if loss_scaler is not None:\n"
            "            loss_scaler(loss, optimizer, clip_grad=args.clip_grad, parameters=model.parameters())\n"
            "        else:\n"
            "            loss.backward(create_graph=False)\n"
            "            if args.clip_grad is not None:\n"
            "                dispatch_clip_grad(model.parameters(), value=args.clip_grad, mode=args.clip_mode)\n"
            "            optimizer.step()\n",
            note="timm train.py"),
        Valid(
            "class Trainer:\n"
            "    def _run_epoch(self, model, batches):\n"
            "        for i, inputs in enumerate(batches):\n"
            "            tr_loss_step = self.training_step(model, inputs)\n"
            "            if do_sync_step:\n"
            "                if self.args.max_grad_norm > 0:\n"
            "                    grad_norm = self._clip_grad_norm(model)\n"
            "                self.optimizer.step()\n"
            "                self.lr_scheduler.step()\n"
            "                model.zero_grad()\n\n"
            "    def training_step(self, model, inputs):\n"
            "        model.train()\n"
            "        loss = self.compute_loss(model, inputs)\n"
            "        self.accelerator.backward(loss)\n"
            "        return loss.detach()\n",
            note="HF Trainer: the backward lives in training_step, the step in the loop"),
        Valid(
            "def optimizer_step(self, optimizer, closure):\n"
            "    optimizer.step(closure=closure)\n",
            note="Lightning automatic optimization: the closure runs backward and clipping"),
        Valid(
            "import torch\n\n\ndef fit(model, x, y):\n"
            "    optimizer = torch.optim.LBFGS(model.parameters())\n"
            "    def closure():\n"
            "        optimizer.zero_grad()\n"
            "        loss = torch.nn.functional.mse_loss(model(x), y)\n"
            "        loss.backward()\n"
            "        return loss\n"
            "    for _ in range(20):\n"
            "        optimizer.step(closure)\n",
            note="LBFGS"),
        Valid(
            "def train(model, loader, optimizer, scheduler, accelerator):\n"
            "    for batch in loader:\n"
            "        with accelerator.accumulate(model):\n"
            "            loss = model(**batch).loss\n"
            "            accelerator.backward(loss)\n"
            "            if accelerator.sync_gradients:\n"
            "                accelerator.clip_grad_norm_(model.parameters(), 1.0)\n"
            "            optimizer.step()\n"
            "            scheduler.step()\n"
            "            optimizer.zero_grad()\n",
            note="Accelerate's no_trainer examples"),
        Valid(
            "def train(fabric, model, optimizer, loader):\n"
            "    for batch in loader:\n"
            "        loss = model(batch)\n"
            "        fabric.backward(loss)\n"
            "        fabric.clip_gradients(model, optimizer, max_norm=1.0)\n"
            "        optimizer.step()\n"
            "        optimizer.zero_grad()\n"),
        Valid(
            "def train(model_engine, loader):\n"
            "    for batch in loader:\n"
            "        loss = model_engine(batch)\n"
            "        model_engine.backward(loss)\n"
            "        model_engine.step()\n",
            note="DeepSpeed clips from its config"),
        Valid(
            "import torch\n\n\ndef train(model, loader, optimizer, accum):\n"
            "    for i, (x, y) in enumerate(loader):\n"
            "        loss = model(x, y) / accum\n"
            "        loss.backward()\n"
            "        if (i + 1) % accum == 0:\n"
            "            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "            optimizer.step()\n"
            "            optimizer.zero_grad()\n"),
        Valid(
            "def train_epoch(model, loader, optimizer, scheduler):\n"
            "    for x, y in loader:\n"
            "        loss = model(x, y)\n"
            "        loss.backward()\n"
            "        clip_gradients(model, 1.0)\n"
            "        optimizer.step()\n"
            "    scheduler.step()\n",
            note="a project helper whose name says clip"),
        Valid(
            "import torch\n\n\ndef train(model, loader, opt, grad_clip=0.0):\n"
            "    for x, y in loader:\n"
            "        opt.zero_grad()\n"
            "        model(x, y).backward()\n"
            "        if grad_clip > 0:\n"
            "            torch.nn.utils.clip_grad_value_(model.parameters(), grad_clip)\n"
            "        opt.step()\n"),
        Valid(
            "def step(self, loss):\n"
            "    loss.backward()\n"
            "    self.lr_scheduler.step()\n",
            note="a scheduler step is not an optimizer step"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef train(model, loader, criterion):\n"
            "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        loss = criterion(model(x), y)\n"
            "        loss.backward()\n"
            "        optimizer.step()\n",
            "import torch\n\n\ndef train(model, loader, criterion):\n"
            "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        loss = criterion(model(x), y)\n"
            "        loss.backward()\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n"
            "        optimizer.step()\n"),
        Invalid(
            "import torch\n\n\ndef train(model, loader, optimizer):\n"
            "    scaler = torch.cuda.amp.GradScaler()\n"
            "    model.train()\n"
            "    for x, y in loader:\n"
            "        with torch.autocast('cuda'):\n"
            "            loss = model(x, y)\n"
            "        scaler.scale(loss).backward()\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n"
            "        optimizer.zero_grad(set_to_none=True)\n",
            "import torch\n\n\ndef train(model, loader, optimizer):\n"
            "    scaler = torch.cuda.amp.GradScaler()\n"
            "    model.train()\n"
            "    for x, y in loader:\n"
            "        with torch.autocast('cuda'):\n"
            "            loss = model(x, y)\n"
            "        scaler.scale(loss).backward()\n"
            "        scaler.unscale_(optimizer)\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n"
            "        optimizer.zero_grad(set_to_none=True)\n",
            note="GradScaler: unscale first; the model is the one put in train mode"),
        Invalid(
            "from torch.nn.utils import clip_grad_norm_\n\n\n"
            "def train(net, loader, optimizer, accum_steps):\n"
            "    for step, (x, y) in enumerate(loader):\n"
            "        loss = net(x, y) / accum_steps\n"
            "        loss.backward()\n"
            "        if (step + 1) % accum_steps == 0:\n"
            "            optimizer.step()  # update\n"
            "            optimizer.zero_grad()\n",
            "from torch.nn.utils import clip_grad_norm_\n\n\n"
            "def train(net, loader, optimizer, accum_steps):\n"
            "    for step, (x, y) in enumerate(loader):\n"
            "        loss = net(x, y) / accum_steps\n"
            "        loss.backward()\n"
            "        if (step + 1) % accum_steps == 0:\n"
            "            clip_grad_norm_(net.parameters(), max_norm=1.0)\n"
            "            optimizer.step()  # update\n"
            "            optimizer.zero_grad()\n",
            note="gradient accumulation; reuses the imported name; the model is the network called"),
        Invalid(
            "def train(model, loader, optimizer, accelerator):\n"
            "    model.train()\n"
            "    for batch in loader:\n"
            "        with accelerator.accumulate(model):\n"
            "            loss = model(**batch).loss\n"
            "            accelerator.backward(loss)\n"
            "            optimizer.step()\n"
            "            optimizer.zero_grad()\n",
            "def train(model, loader, optimizer, accelerator):\n"
            "    model.train()\n"
            "    for batch in loader:\n"
            "        with accelerator.accumulate(model):\n"
            "            loss = model(**batch).loss\n"
            "            accelerator.backward(loss)\n"
            "            if accelerator.sync_gradients:\n"
            "                accelerator.clip_grad_norm_(model.parameters(), 1.0)\n"
            "            optimizer.step()\n"
            "            optimizer.zero_grad()\n",
            note="Accelerate: clip on the synced step only, through the accelerator"),
        Invalid(
            "import torch\n\n\ndef train_step(batch, opt_a, opt_b):\n"
            "    loss = compute_loss(batch)\n"
            "    loss.backward()\n"
            "    opt_a.step()\n",
            "import torch\n\n\ndef train_step(batch, opt_a, opt_b):\n"
            "    loss = compute_loss(batch)\n"
            "    loss.backward()\n"
            '    torch.nn.utils.clip_grad_norm_([p for group in opt_a.param_groups for p in group["params"]], '
            "max_norm=1.0)\n"
            "    opt_a.step()\n",
            unsafe=True, note="no model in sight: clip what the optimizer steps (unsafe)"),
        Invalid(
            "import torch\n\n\ndef train(model, loader, optimizer, scaler):\n"
            "    for x, y in loader:\n"
            "        loss = model(x, y)\n"
            "        if scaler is not None:\n"
            "            scaler.scale(loss).backward()\n"
            "            scaler.unscale_(optimizer)\n"
            "            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)\n"
            "            scaler.step(optimizer)\n"
            "            scaler.update()\n"
            "        else:\n"
            "            loss.backward()\n"
            "            optimizer.step()\n",
            "import torch\n\n\ndef train(model, loader, optimizer, scaler):\n"
            "    for x, y in loader:\n"
            "        loss = model(x, y)\n"
            "        if scaler is not None:\n"
            "            scaler.scale(loss).backward()\n"
            "            scaler.unscale_(optimizer)\n"
            "            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)\n"
            "            scaler.step(optimizer)\n"
            "            scaler.update()\n"
            "        else:\n"
            "            loss.backward()\n"
            "            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n"
            "            optimizer.step()\n",
            note="the AMP branch clips, the fp32 branch does not"),
        Invalid(
            "import torch\n\n\ndef train(model, loader, optimizer):\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        model(x, y).backward()\n"
            "        optimizer.step()\n",
            "import torch\n\n\ndef train(model, loader, optimizer):\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        model(x, y).backward()\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n"
            "        optimizer.step()\n",
            note="clipping before backward clips the zeroed gradients"),
        Invalid(
            "import torch\n\n\nclass Trainer:\n"
            "    def __init__(self, model):\n"
            "        self.model = model\n"
            "        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n\n"
            "    def fit(self, loader):\n"
            "        for batch in loader:\n"
            "            self.optimizer.zero_grad()\n"
            "            self.model(batch).backward()\n"
            "            self.optimizer.step()\n",
            "import torch\n\n\nclass Trainer:\n"
            "    def __init__(self, model):\n"
            "        self.model = model\n"
            "        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n\n"
            "    def fit(self, loader):\n"
            "        for batch in loader:\n"
            "            self.optimizer.zero_grad()\n"
            "            self.model(batch).backward()\n"
            "            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=1.0)\n"
            "            self.optimizer.step()\n",
            note="the optimizer is built in __init__ from the model that self.model holds"),
        Invalid(
            "import torch\n\n\nclass Solver:\n"
            "    def __init__(self, net):\n"
            "        self.net = net\n"
            "        self.o = torch.optim.RMSprop(net.parameters())\n\n"
            "    def update(self, batch):\n"
            "        self.o.zero_grad()\n"
            "        self.net(batch).mean().backward()\n"
            "        self.o.step()\n",
            "import torch\n\n\nclass Solver:\n"
            "    def __init__(self, net):\n"
            "        self.net = net\n"
            "        self.o = torch.optim.RMSprop(net.parameters())\n\n"
            "    def update(self, batch):\n"
            "        self.o.zero_grad()\n"
            "        self.net(batch).mean().backward()\n"
            "        torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm=1.0)\n"
            "        self.o.step()\n",
            note="an optimizer known by its construction in __init__, not by its name"),
        Invalid(
            "import lightning as L\n\n\nclass GAN(L.LightningModule):\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        opt = self.optimizers()\n"
            "        loss = self.compute_loss(batch)\n"
            "        opt.zero_grad()\n"
            "        self.manual_backward(loss)\n"
            "        opt.step()\n",
            "import lightning as L\n\n\nclass GAN(L.LightningModule):\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        opt = self.optimizers()\n"
            "        loss = self.compute_loss(batch)\n"
            "        opt.zero_grad()\n"
            "        self.manual_backward(loss)\n"
            '        self.clip_gradients(opt, gradient_clip_val=1.0, gradient_clip_algorithm="norm")\n'
            "        opt.step()\n",
            note="Lightning manual optimization: the Trainer's gradient_clip_val does not apply"),
        Invalid(
            "import torch\n"
            "model = torch.nn.Linear(4, 1)\n"
            "opt = torch.optim.Adam(model.parameters())\n"
            "while True:\n"
            "    loss = model(x).pow(2).mean(); loss.backward(); opt.step()\n",
            None, note="a script; step and backward on one line: no place to insert, no fix"),
        Invalid(
            "import torch\n"
            "def train(model, opt, data, fabric):\n"
            "    for batch in data:\n"
            "        fabric.backward(model(batch))\n"
            "        opt.step()\n",
            "import torch\n"
            "def train(model, opt, data, fabric):\n"
            "    for batch in data:\n"
            "        fabric.backward(model(batch))\n"
            "        fabric.clip_gradients(model, opt, max_norm=1.0)\n"
            "        opt.step()\n"),
    ]

    def check(self, r: Routine) -> None:
        backwards = r.of(BACKWARD)
        if not backwards:
            return
        clips = r.of(CLIP)
        for step in r.of(STEP):
            if not r.is_optimizer_step(step) and not self._built_as_optimizer(r, step):
                continue
            prior = [b for b in backwards if b.index < step.index and not exclusive(b.place, step.place)]
            if not prior:
                continue
            if any(c.index < step.index and not exclusive(c.place, step.place)
                   and any(b.index < c.index and not exclusive(b.place, c.place) for b in prior)
                   for c in clips):
                continue
            # The fix looks for the optimizer's construction (in __init__, at module level): see it all.
            self.require_full_module()
            last = max(prior, key=lambda b: b.index)
            message = (f"`{self.text(step.node)}` applies the gradients of "
                       f"`{self.text(last.node)}` ({self.at(last.node)}) with no gradient clipping in "
                       f"between: one outlier batch can make a huge update that derails training (or NaNs)")
            self.report(step.node, message, self._fix(r, step, prior, last), statement=step.stmt)

    def _built_as_optimizer(self, r: Routine, step: Event) -> bool:
        """`self.o.step()` where __init__ has `self.o = torch.optim.Adam(...)` (a region we may not see)."""
        key = step.key
        if step.extra.get("closure") or step.extra.get("positional") or not key or r.constructed(key):
            return False
        if SCHEDULER_NAME.search(last_segment(key).lower()) or r.is_scaler(key):
            return False
        if not (root_of(key) == "self" or r.is_free(key)):
            return False
        self.require_full_module()
        return self.analysis.built_elsewhere(r, key) == "optimizer"

    # -- fix ------------------------------------------------------------------------------------------
    def _fix(self, r: Routine, step: Event, prior: list, last: Event):
        stmt = step.stmt
        if not isinstance(stmt, cst.SimpleStatementLine) or any(b.stmt is stmt for b in r.of(BACKWARD)):
            return None
        optimizer = step.extra.get("optimizer") or step.key
        if not optimizer:
            return None
        max_norm = self.option("max-norm")
        bound = format_number(max_norm) if isinstance(max_norm, (int, float)) else str(max_norm)
        via = last.extra.get("via")
        model, _how = identify_model(self.analysis, r, optimizer)
        params = f"{model}.parameters()" if model else _PARAM_GROUPS.format(opt=optimizer)
        safe = model is not None
        references = []
        lines: list = []
        owner = last.extra.get("owner")
        if via == "lightning" and owner:
            lines.append(f'{owner}.clip_gradients({optimizer}, gradient_clip_val={bound}, '
                         f'gradient_clip_algorithm="norm")')
            safe = True
        elif via == "accelerator" and owner:
            clip = f"{owner}.clip_grad_norm_({params}, {bound})"
            accumulating = any(isinstance(c.func, cst.Attribute) and c.func.attr.value == "accumulate"
                               for c in step.place.contexts)
            lines.append(f"if {owner}.sync_gradients:\n    {clip}" if accumulating else clip)
        elif via == "fabric" and owner:
            if model is None:
                return None
            lines.append(f"{owner}.clip_gradients({model}, {optimizer}, max_norm={bound})")
        elif via in ("tensor", "scaled", "helper"):
            scaled_step = bool(step.extra.get("optimizer"))
            if not scaled_step and any(b.extra.get("via") == "scaled" for b in prior):
                return None
            if scaled_step and not self._unscaled(r, step, prior):
                lines.append(f"{step.key}.unscale_({optimizer})")
            ref = self.reference("torch.nn.utils.clip_grad_norm_")
            references.append(ref)
            lines.append(f"{cst.Module([]).code_for_node(ref.expr)}({params}, max_norm={bound})")
        else:
            return None
        statements = [cst.parse_statement(line + "\n") for line in lines]
        what = "clip_grad_norm_" if "clip_gradients" not in lines[-1] else "clip_gradients"
        return self.insert_before(stmt, statements, safe=safe, references=references,
                                  message=f"Clip gradients (`{what}`, max_norm={bound}) before the step")

    @staticmethod
    def _unscaled(r: Routine, step: Event, prior: list) -> bool:
        first = min(b.index for b in prior)
        return any(first < u.index < step.index and not exclusive(u.place, step.place) for u in r.of(UNSCALE))

