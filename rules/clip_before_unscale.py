from __future__ import annotations

import libcst as cst

from gradlint.flow.base import RoutineRule, first_event_at, in_block, insertion_anchor
from gradlint.flow.events import CLIP, STEP, Event, Routine, exclusive
from gradlint.rule import Invalid, Valid

_INSERTED = ("unscaled", -1)  # the token of the `unscale_` a fix would insert


class ClipBeforeUnscale(RoutineRule):
    """
    ## What it does
    Finds gradient clipping that reads `.grad` as it is (`torch.nn.utils.clip_grad_norm_`,
    `clip_grad_value_`, timm's `dispatch_clip_grad`, an FSDP module's `model.clip_grad_norm_`) reached, on
    some path, by gradients that a GradScaler scaled (`scaler.scale(loss).backward()`, here or in a routine
    of this file that does it) with no `scaler.unscale_(optimizer)` in between, before `scaler.step(...)`.

    The scaler is a scaler by the facts: built by `GradScaler()` (`torch.amp`, `torch.cuda.amp`, FSDP's
    `ShardedGradScaler`) or used as one (`scaler.scale(loss).backward()`, `scaler.unscale_(opt)`). A call
    we cannot see that is handed the scaler may unscale, so it ends the path. Accelerate's
    `clip_grad_norm_`, Fabric's and Lightning's `clip_gradients` unscale for you and are never reported.

    ## Why is this bad?
    Under a GradScaler the gradients hold `loss_scale * grad`, with a scale of 2**16 by default and
    changing during training. Clipping them compares that product against `max_norm`: the clip fires on
    almost every step and the effective threshold drifts with the scale, so the clipping the author tuned
    never happens as intended (and a value clip keeps scaled values). `scaler.step` unscales only after it.

    ## Example
    ```python
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    scaler.step(optimizer)
    scaler.update()
    ```

    ## Use instead
    ```python
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    scaler.step(optimizer)
    scaler.update()
    ```

    ## Fix safety
    Safe: the fix inserts `scaler.unscale_(optimizer)` (with the optimizer of the `scaler.step` that
    follows) once, before the first clip of the step, where the gradients are complete. `scaler.step` then
    skips its own unscale and skips the step on inf/NaN as before, so the update is the documented AMP
    recipe: results change only in that the clip now compares the true norm with `max_norm`, which is the
    defect. The fix never raises where the original ran: it is offered only when, on every path from the
    inserted call to the step, nothing else unscales that optimizer (a second `unscale_` before `step`
    raises "unscale_() has already been called"), neither directly, nor in a routine of this file, nor in a
    call we cannot see that is handed the scaler. When the clip sits in a loop that the step is not in, the
    call goes before that loop (`unscale_` may run once per step). No fix when an `unscale_` already follows
    the clip (moving it is a rewrite we leave to you).

    ## Options
    None.
    """

    code = "GL007"
    name = "clip-before-unscale"
    summary = "Gradient clipping under a GradScaler before scaler.unscale_(optimizer)"
    triggers = ((r"clip",), (r"\.step\s*\(",), (r"backward",))

    VALID = [
        Valid(
            "import torch\n\n\ndef step(model, loss, optimizer, scaler, args):\n"
            "    scaler.scale(loss).backward()\n"
            "    if args.horovod:\n"
            "        optimizer.synchronize()\n"
            "        scaler.unscale_(optimizer)\n"
            "        if args.grad_clip_norm is not None:\n"
            "            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm, norm_type=2.0)\n"
            "        with optimizer.skip_synchronize():\n"
            "            scaler.step(optimizer)\n"
            "    else:\n"
            "        if args.grad_clip_norm is not None:\n"
            "            scaler.unscale_(optimizer)\n"
            "            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip_norm, norm_type=2.0)\n"
            "        scaler.step(optimizer)\n"
            "    scaler.update()\n",
            note="open_clip train.py"),
        Valid(
            "from timm.utils import dispatch_clip_grad\n\n\n"
            "class NativeScaler:\n"
            "    def __call__(self, loss, optimizer, clip_grad=None, parameters=None, need_update=True):\n"
            "        self._scaler.scale(loss).backward()\n"
            "        if need_update:\n"
            "            if clip_grad is not None:\n"
            "                self._scaler.unscale_(optimizer)\n"
            "                dispatch_clip_grad(parameters, clip_grad)\n"
            "            self._scaler.step(optimizer)\n"
            "            self._scaler.update()\n",
            note="timm's NativeScaler"),
        Valid(
            "def train(model, loader, optimizer, accelerator):\n"
            "    for batch in loader:\n"
            "        accelerator.backward(model(**batch).loss)\n"
            "        accelerator.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        optimizer.step()\n",
            note="Accelerate unscales inside its clip_grad_norm_"),
        Valid(
            "import torch\n\n\ndef train(model, loader, optimizer):\n"
            "    for x, y in loader:\n"
            "        model(x, y).backward()\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        optimizer.step()\n",
            note="no GradScaler"),
        Valid(
            "import torch\n\n\ndef train(model, loader, optimizer, scaler, accum):\n"
            "    for i, (x, y) in enumerate(loader):\n"
            "        with torch.autocast('cuda', dtype=torch.float16):\n"
            "            loss = model(x, y) / accum\n"
            "        scaler.scale(loss).backward()\n"
            "        if (i + 1) % accum == 0:\n"
            "            scaler.unscale_(optimizer)\n"
            "            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "            scaler.step(optimizer)\n"
            "            scaler.update()\n"
            "            optimizer.zero_grad()\n"),
        Valid(
            "import torch\n\n\ndef train(fabric, model, optimizer, batch):\n"
            "    fabric.backward(model(batch))\n"
            "    fabric.clip_gradients(model, optimizer, max_norm=1.0)\n"
            "    optimizer.step()\n"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef train(model, loader, optimizer, scaler):\n"
            "    for x, y in loader:\n"
            "        with torch.autocast('cuda'):\n"
            "            loss = model(x, y)\n"
            "        scaler.scale(loss).backward()\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n"
            "        optimizer.zero_grad()\n",
            "import torch\n\n\ndef train(model, loader, optimizer, scaler):\n"
            "    for x, y in loader:\n"
            "        with torch.autocast('cuda'):\n"
            "            loss = model(x, y)\n"
            "        scaler.scale(loss).backward()\n"
            "        scaler.unscale_(optimizer)\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n"
            "        optimizer.zero_grad()\n"),
        Invalid(
            "from torch.nn.utils import clip_grad_norm_ as clip\n\n\n"
            "class Trainer:\n"
            "    def step(self, loss):\n"
            "        self.scaler.scale(loss).backward()\n"
            "        if self.cfg.clip_grad:\n"
            "            # keep updates bounded\n"
            "            clip(self.model.parameters(), self.cfg.clip_grad)\n"
            "        self.scaler.step(self.optimizer)\n"
            "        self.scaler.update()\n",
            "from torch.nn.utils import clip_grad_norm_ as clip\n\n\n"
            "class Trainer:\n"
            "    def step(self, loss):\n"
            "        self.scaler.scale(loss).backward()\n"
            "        if self.cfg.clip_grad:\n"
            "            self.scaler.unscale_(self.optimizer)\n"
            "            # keep updates bounded\n"
            "            clip(self.model.parameters(), self.cfg.clip_grad)\n"
            "        self.scaler.step(self.optimizer)\n"
            "        self.scaler.update()\n",
            note="an import alias; conditional clip; the comment stays with the clip"),
        Invalid(
            "import torch\n\n\ndef step(model, loss, opt, scaler):\n"
            "    scaler.scale(loss).backward()\n"
            "    for group in opt.param_groups:\n"
            "        torch.nn.utils.clip_grad_value_(group['params'], 0.5)\n"
            "    scaler.step(opt)\n"
            "    scaler.update()\n",
            "import torch\n\n\ndef step(model, loss, opt, scaler):\n"
            "    scaler.scale(loss).backward()\n"
            "    scaler.unscale_(opt)\n"
            "    for group in opt.param_groups:\n"
            "        torch.nn.utils.clip_grad_value_(group['params'], 0.5)\n"
            "    scaler.step(opt)\n"
            "    scaler.update()\n",
            note="a clip per group: unscale_ once, before the loop"),
        Invalid(
            "import torch\n\n\ndef step(gen, disc, loss, opt, scaler):\n"
            "    scaler.scale(loss).backward()\n"
            "    torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)\n"
            "    torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)\n"
            "    scaler.step(opt)\n"
            "    scaler.update()\n",
            "import torch\n\n\ndef step(gen, disc, loss, opt, scaler):\n"
            "    scaler.scale(loss).backward()\n"
            "    scaler.unscale_(opt)\n"
            "    torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)\n"
            "    torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)\n"
            "    scaler.step(opt)\n"
            "    scaler.update()\n",
            note="two clips, one step: one finding, one unscale_"),
        Invalid(
            "import torch\n\n\ndef step(model, loss, opt, scaler):\n"
            "    scaler.scale(loss).backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    scaler.unscale_(opt)\n"
            "    scaler.step(opt)\n"
            "    scaler.update()\n",
            None, note="unscale_ after the clip: reported, the reordering is left to the author"),
        Invalid(
            "import torch\n\n\ndef backward(loss, scaler):\n"
            "    scaler.scale(loss).backward()\n\n\n"
            "def train(model, data, optimizer, scaler):\n"
            "    for x in data:\n"
            "        loss = model(x)\n"
            "        backward(loss, scaler)\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n",
            "import torch\n\n\ndef backward(loss, scaler):\n"
            "    scaler.scale(loss).backward()\n\n\n"
            "def train(model, data, optimizer, scaler):\n"
            "    for x in data:\n"
            "        loss = model(x)\n"
            "        backward(loss, scaler)\n"
            "        scaler.unscale_(optimizer)\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n",
            note="the scaled backward in a helper of this file"),
        Invalid(
            "import torch\n\n\ndef log_grad_norm(scaler, optimizer, model, writer):\n"
            "    scaler.unscale_(optimizer)\n"
            "    writer.add_scalar('grad_norm', sum(p.grad.norm() for p in model.parameters()))\n\n\n"
            "def step(model, loss, optimizer, scaler, writer):\n"
            "    scaler.scale(loss).backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "    log_grad_norm(scaler, optimizer, model, writer)\n"
            "    scaler.step(optimizer)\n"
            "    scaler.update()\n",
            None, note="a helper unscales after the clip: inserting unscale_ before the clip would raise "
                       "'unscale_() has already been called', so no fix"),
    ]

    def check(self, r: Routine) -> None:
        clips = r.of(CLIP)
        if not clips or not any(e.kind == STEP and e.extra.get("argument") for e in r.events):
            return
        facts, grads = self.facts, self.grads
        steps = [s for s in r.of(STEP) if s.extra.get("argument") and facts.is_scaler(r, s.key)]
        if not steps:
            return
        states = grads.observe("scale", r)
        done: set = set()
        for clip in clips:
            if grads.clip_kind(r, clip) != "raw":
                continue
            scaled = [o for m, o in states.get(clip.index, ()) if m == "scaled"]
            after = [s for s in steps if s.index > clip.index and not exclusive(clip.place, s.place)]
            if not scaled or not after:
                continue
            step = after[0]
            if id(step) in done:
                continue
            done.add(id(step))
            backward = next(e for e in r.events if e.index == max(scaled))
            scaler, optimizer = step.key, step.extra["argument"]
            message = (f"`{self.text(clip.node.func)}(...)` clips gradients that "
                       f"`{self.text(backward.node)}` ({self.at(backward.node)}) left multiplied by the "
                       f"loss scale: call `{scaler}.unscale_({optimizer})` first, or the threshold applies to "
                       "scaled gradients")
            self.report(clip.node, message, self._fix(r, clip, backward, step), statement=clip.stmt)

    def _fix(self, r: Routine, clip: Event, backward: Event, step: Event):
        grads = self.grads
        if any(clip.index < e.index < step.index and not exclusive(e.place, step.place) and grads.unscales(r, e)
               for e in r.events):
            return None  # an unscale_ follows the clip: the reordering is left to the author
        anchor = insertion_anchor(clip.place, step.place)
        if not in_block(anchor) or backward.stmt is anchor or step.stmt is anchor:
            return None
        if anchor is not clip.stmt and not isinstance(anchor, (cst.For, cst.While)):
            return None
        at = first_event_at(r, anchor)
        if at is None:
            return None
        inserted = grads.observe("scale", r, {at: _INSERTED})
        for e in r.events:
            if e.index > at and _INSERTED in inserted.get(e.index, ()) and grads.unscales(r, e):
                return None  # would unscale twice: "unscale_() has already been called"
        call = f"{step.key}.unscale_({step.extra['argument']})"
        return self.insert_before(anchor, [cst.parse_statement(call + "\n")],
                                  message=f"Insert `{call}` before the clip")
