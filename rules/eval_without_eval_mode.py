from __future__ import annotations

import libcst as cst

from gradlint.loops import (
    ASSIGN,
    CALL,
    EVAL,
    EVALISH_CALLEE,
    MODE,
    TRAIN,
    TRAINING_TEXT,
    Event,
    Region,
    Routine,
    RoutineRule,
    bind_arguments,
    callee_name,
    class_keeps_eval,
    class_kind,
    enclosing_class,
    exclusive,
    final_mode,
    forward_target,
    framework_eval_hook,
    helper_calls,
    iterates_loader,
    loader_loop_text,
    manages_training,
    obj_key,
    root_of,
    sets_eval_chain,
)
from gradlint.nodes import root_name
from gradlint.rule import Invalid, Valid

_MAX_DEPTH = 3


class EvalWithoutEvalMode(RoutineRule):
    """
    ## What it does
    Finds a model whose forward runs under `torch.no_grad()` or `torch.inference_mode()` (a `with` block or
    a decorator) in a routine that never puts it in eval mode first: no `model.eval()` or
    `model.train(False)` on the same object (or an alias: `model.module`, `net = unwrap_model(model)`)
    earlier in the routine.

    The model is the object called (`model(x)`, `self.net(x)`, `model.generate(...)`,
    `model.encode_image(x)`) that reads as a network: its name, its `.parameters()`/`.to()`/mode calls, or
    an `nn.Module` annotation. Not reported:
    - losses, metrics and other callables under no_grad (`criterion(out, y)`, `accuracy(...)`);
    - a no_grad forward that is part of a training step (same loop iteration as a backward or an optimizer
      step): teacher and target-network forwards, feature caches for gradient accumulation;
    - EMA and target-network updates that only touch parameters;
    - a model the routine deliberately put in `.train()` mode with no training around (BatchNorm
      re-estimation);
    - Lightning hooks (`validation_step`, `test_step`, `predict_step`, `on_validation_*`...) and a
      `Trainer` subclass's `prediction_step`: the framework switches the mode;
    - a helper whose every call site in the module comes after `.eval()` on the object it receives, or that
      is called after a helper of the module that puts the model in eval mode;
    - an `nn.Module`'s own methods calling its sub-modules;
    - inference code: only files that train or switch modes somewhere, and passes over a data loader
      (`for x, y in val_loader`), are in scope; a library function handed a model (HF `from_pretrained`
      models are already in eval mode) leaves the mode to its caller.

    ## Why is this bad?
    `no_grad` only stops gradient tracking; the model is still in training mode. Dropout keeps zeroing
    activations, so validation metrics are noisy and pessimistic, and BatchNorm normalizes with batch
    statistics and updates its running mean and variance with validation data, which leaks the validation
    set into the weights used at test time.

    ## Example
    ```python
    def evaluate(model, loader):
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(-1) == y).sum()
    ```

    ## Use instead
    ```python
    def evaluate(model, loader):
        model.eval()
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(-1) == y).sum()
    ```

    ## Fix safety
    The fix inserts `model.eval()` before the no_grad block (first in a decorated routine). It is safe when
    the routine does not train afterwards; when a backward or an optimizer step can run after the inserted
    call without a `.train()` in between (a validation pass inside the training loop), the fix is unsafe:
    restore training mode at the top of the epoch loop too (GL006 reports that). No fix when the model is
    bound inside the no_grad block.

    ## Options
    None.
    """

    code = "GL004"
    name = "eval-without-eval-mode"
    summary = "Model forward under no_grad/inference_mode without model.eval() first"
    triggers = ((r"no_grad", r"inference_mode", r"set_grad_enabled"),)

    VALID = [
        Valid(
            "import torch\n\n\ndef validate(model, loader, loss_fn, args):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        for batch_idx, (input, target) in enumerate(loader):\n"
            "            output = model(input)\n"
            "            loss = loss_fn(output, target)\n"
            "            acc1, acc5 = accuracy(output, target, topk=(1, 5))\n",
            note="timm train.py validate()"),
        Valid(
            "import torch\n\n\n"
            "def train_one_epoch(model, data, loss, optimizer, scaler, dist_model, args):\n"
            "    model.train()\n"
            "    if args.distill:\n"
            "        dist_model.eval()\n"
            "    for i, batch in enumerate(data):\n"
            "        images, texts = batch\n"
            "        if args.accum_freq == 1:\n"
            "            model_out = model(images, texts)\n"
            "            if args.distill:\n"
            "                with torch.no_grad():\n"
            "                    dist_model_out = dist_model(images, texts)\n"
            "            backward(loss(**model_out), scaler)\n"
            "        else:\n"
            "            with torch.no_grad():\n"
            "                model_out = model(images, texts)\n"
            "                accum_features.append(model_out)\n"
            "        optimizer.step()\n"
            "        with torch.no_grad():\n"
            "            unwrap_model(model).logit_scale.clamp_(0, 4.6052)\n",
            note="open_clip train.py: teacher in eval, feature cache for accumulation in train mode"),
        Valid(
            "import torch\n\n\ndef evaluate(model, data, args):\n"
            "    model.eval()\n"
            "    if args.distributed:\n"
            "        model = model.module\n"
            "    with torch.inference_mode():\n"
            "        for images, texts in data:\n"
            "            model_out = model(images, texts)\n",
            note="open_clip evaluate(): eval before unwrapping DDP"),
        Valid(
            "import torch\n\n\nclass Trainer:\n"
            "    def evaluation_loop(self, dataloader):\n"
            "        model = self._wrap_model(self.model, training=False)\n"
            "        if hasattr(model, 'eval') and callable(model.eval):\n"
            "            model.eval()\n"
            "        for step, inputs in enumerate(dataloader):\n"
            "            losses, logits, labels = self.prediction_step(model, inputs)\n\n"
            "    def prediction_step(self, model: torch.nn.Module, inputs):\n"
            "        with torch.no_grad():\n"
            "            outputs = model(**inputs)\n"
            "        return outputs\n",
            note="HF Trainer: every call site of the helper comes after model.eval()"),
        Valid(
            "import torch\nimport lightning as L\n\n\nclass LitModel(L.LightningModule):\n"
            "    def validation_step(self, batch, batch_idx):\n"
            "        with torch.no_grad():\n"
            "            out = self.model(batch)\n"
            "        self.log('val_loss', out.loss)\n",
            note="Lightning puts the module in eval before validation_step"),
        Valid(
            "import torch\n\n\ndef update_ema(ema_model, model, decay):\n"
            "    with torch.no_grad():\n"
            "        for ema_p, p in zip(ema_model.parameters(), model.parameters()):\n"
            "            ema_p.mul_(decay).add_(p, alpha=1 - decay)\n",
            note="EMA update: parameters only, no forward"),
        Valid(
            "import torch\n\n\ndef optimize(policy_net, target_net, batch, optimizer):\n"
            "    q = policy_net(batch.state).gather(1, batch.action)\n"
            "    with torch.no_grad():\n"
            "        next_q = target_net(batch.next_state).max(1).values\n"
            "    loss = torch.nn.functional.smooth_l1_loss(q, batch.reward + 0.99 * next_q)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n",
            note="DQN target network inside the training step"),
        Valid(
            "import torch\n\n\ndef train(model, loader, criterion, optimizer):\n"
            "    for x, y in loader:\n"
            "        out = model(x)\n"
            "        loss = criterion(out, y)\n"
            "        loss.backward()\n"
            "        optimizer.step()\n"
            "        with torch.no_grad():\n"
            "            acc = metric(out, y)\n"
            "            running = criterion(out, y)\n",
            note="metrics and loss objects under no_grad"),
        Valid(
            "import torch\n\n\ndef run_eval(net, loader):\n"
            "    with torch.no_grad():\n"
            "        return [net(x) for x in loader]\n\n\n"
            "def main(net, loaders):\n"
            "    net.eval()\n"
            "    for loader in loaders:\n"
            "        run_eval(net, loader)\n",
            note="a helper called only after net.eval()"),
        Valid(
            "import torch\n\n\ndef recalibrate_bn(model, loader):\n"
            "    model.train()\n"
            "    with torch.no_grad():\n"
            "        for x in loader:\n"
            "            model(x)\n",
            note="deliberate train mode: BatchNorm statistics re-estimation"),
        Valid(
            "import torch\n\nteacher = load_teacher(path).eval()\n"
            "with torch.no_grad():\n"
            "    soft = teacher(images)\n"),
        Valid(
            "import torch\n\n\ndef test(model, loader):\n"
            "    model.train(False)\n"
            "    with torch.inference_mode():\n"
            "        return [model(x) for x in loader]\n"),
        Valid(
            "import torch\nfrom torch import nn\n\n\nclass Detector(nn.Module):\n"
            "    @torch.no_grad()\n"
            "    def predict(self, x):\n"
            "        return self.head(self.backbone(x))\n",
            note="a module's own method: its caller owns the mode"),
        Valid(
            "import torch\n\n\ndef set_eval(model):\n"
            "    model.eval()\n\n\n"
            "def infer(model, x):\n"
            "    set_eval(model)\n"
            "    with torch.no_grad():\n"
            "        return model(x)\n",
            note="a helper of the module puts the model in eval first"),
        Valid(
            "import torch\n\n\ndef evaluate(model, loader, criterion):\n"
            "    with torch.no_grad():\n"
            "        for x, y in loader:\n"
            "            loss = criterion(x, y)\n"
            "            preds = tokenizer.decode(x)\n",
            note="no network called"),
        Valid(
            "import torch\n\n\ndef generate(model, tokenizer, prompt):\n"
            "    inputs = tokenizer(prompt, return_tensors='pt')\n"
            "    with torch.no_grad():\n"
            "        return model.generate(**inputs, max_new_tokens=20)\n",
            note="inference library code: the caller owns the mode (from_pretrained models are in eval)"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef evaluate(model, loader):\n"
            "    correct = 0\n"
            "    with torch.no_grad():\n"
            "        for x, y in loader:\n"
            "            correct += (model(x).argmax(-1) == y).sum().item()\n"
            "    return correct\n",
            "import torch\n\n\ndef evaluate(model, loader):\n"
            "    correct = 0\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        for x, y in loader:\n"
            "            correct += (model(x).argmax(-1) == y).sum().item()\n"
            "    return correct\n"),
        Invalid(
            "import torch\n\n\n@torch.no_grad()\ndef evaluate(net, val_loader, device):\n"
            '    """Top-1 accuracy."""\n'
            "    hits = 0\n"
            "    for images, labels in val_loader:\n"
            "        hits += (net(images.to(device)).argmax(1) == labels).sum()\n"
            "    return hits\n",
            "import torch\n\n\n@torch.no_grad()\ndef evaluate(net, val_loader, device):\n"
            '    """Top-1 accuracy."""\n'
            "    net.eval()\n"
            "    hits = 0\n"
            "    for images, labels in val_loader:\n"
            "        hits += (net(images.to(device)).argmax(1) == labels).sum()\n"
            "    return hits\n",
            note="decorator: eval first in the body, after the docstring"),
        Invalid(
            "import torch\n\n\ndef train(model, train_loader, val_loader, optimizer, criterion, epochs):\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        for x, y in train_loader:\n"
            "            optimizer.zero_grad()\n"
            "            criterion(model(x), y).backward()\n"
            "            optimizer.step()\n"
            "        # validation\n"
            "        with torch.no_grad():\n"
            "            val_loss = sum(criterion(model(x), y) for x, y in val_loader)\n",
            "import torch\n\n\ndef train(model, train_loader, val_loader, optimizer, criterion, epochs):\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        for x, y in train_loader:\n"
            "            optimizer.zero_grad()\n"
            "            criterion(model(x), y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        # validation\n"
            "        with torch.no_grad():\n"
            "            val_loss = sum(criterion(model(x), y) for x, y in val_loader)\n",
            note="validation inside the epoch loop; train() at the top of the loop keeps the fix safe"),
        Invalid(
            "import torch\n\n\ndef fit(model, train_loader, val_loader, optimizer):\n"
            "    model.train()\n"
            "    for epoch in range(10):\n"
            "        for x, y in train_loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        with torch.no_grad():\n"
            "            for x, y in val_loader:\n"
            "                val = model(x, y)\n",
            "import torch\n\n\ndef fit(model, train_loader, val_loader, optimizer):\n"
            "    model.train()\n"
            "    for epoch in range(10):\n"
            "        for x, y in train_loader:\n"
            "            optimizer.zero_grad()\n"
            "            model(x, y).backward()\n"
            "            optimizer.step()\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            for x, y in val_loader:\n"
            "                val = model(x, y)\n",
            unsafe=True, note="the next epoch would train in eval mode: unsafe (GL006 then asks for train())"),
        Invalid(
            "import torch\n\nmodel.train()\nfor epoch in range(500):\n"
            "    loss = loss_fn(model(X_train), y_train)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    with torch.no_grad():\n"
            "        val_loss = loss_fn(model(X_val), y_val)\n",
            "import torch\n\nmodel.train()\nfor epoch in range(500):\n"
            "    loss = loss_fn(model(X_train), y_train)\n"
            "    optimizer.zero_grad()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        val_loss = loss_fn(model(X_val), y_val)\n",
            unsafe=True, note="full-batch script: validation after the step is no part of the training step"),
        Invalid(
            "from torch import inference_mode\n\n\nclass Runner:\n"
            "    def validate(self):\n"
            "        with inference_mode():\n"
            "            for batch in self.val_loader:\n"
            "                logits = self.model(batch['pixel_values'])\n",
            "from torch import inference_mode\n\n\nclass Runner:\n"
            "    def validate(self):\n"
            "        self.model.eval()\n"
            "        with inference_mode():\n"
            "            for batch in self.val_loader:\n"
            "                logits = self.model(batch['pixel_values'])\n",
            note="a trainer class; imported inference_mode"),
        Invalid(
            "import torch\n\n\ndef score(model, loader):\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x in loader]\n\n\n"
            "def main(loader):\n"
            "    model = build_model()\n"
            "    print(score(model, loader))\n",
            "import torch\n\n\ndef score(model, loader):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x in loader]\n\n\n"
            "def main(loader):\n"
            "    model = build_model()\n"
            "    print(score(model, loader))\n",
            note="the helper's call site does not call eval() either"),
        Invalid(
            "import torch\n\nmodel = Net()\nmodel.load_state_dict(torch.load('ckpt.pt'))\n\n"
            "with torch.no_grad():\n"
            "    preds = [model(images).argmax(-1) for images, _ in test_loader]\n",
            "import torch\n\nmodel = Net()\nmodel.load_state_dict(torch.load('ckpt.pt'))\n\n"
            "model.eval()\n"
            "with torch.no_grad():\n"
            "    preds = [model(images).argmax(-1) for images, _ in test_loader]\n",
            note="an inference script over a data loader"),
        Invalid(
            "import torch\n\n\ndef decode_all(vae, latents_loader):\n"
            "    with torch.no_grad(), torch.autocast('cuda'):\n"
            "        return [vae.decode(z).sample for z in latents_loader]\n",
            "import torch\n\n\ndef decode_all(vae, latents_loader):\n"
            "    vae.eval()\n"
            "    with torch.no_grad(), torch.autocast('cuda'):\n"
            "        return [vae.decode(z).sample for z in latents_loader]\n",
            note="a forward method (decode)"),
    ]

    def check(self, r: Routine) -> None:
        if not r.regions or framework_eval_hook(self.ctx, r):
            return
        kind = class_kind(self.ctx, enclosing_class(r))
        training = r.training_events()
        judged: set = set()
        for e in r.events:
            if e.kind != CALL or e.no_grad is None:
                continue
            key = forward_target(self.ctx, r, e)
            if key is None or key in judged:
                continue
            if kind in ("module", "lightning") and (root_of(key) in ("self", "cls") or _self_derived(r, key)):
                continue  # a module's own sub-modules: whoever calls the module owns the mode
            region = e.no_grad
            if self._training_step(e, region, training):
                continue
            judged.add(key)
            if self._mode_set_before(r, e, key):
                continue
            trained = [t for t in r.of(TRAIN) if t.key in r.aliases(key) and t.index < e.index
                       and not exclusive(t.place, e.place)]
            if trained and not training:
                continue  # deliberate: BatchNorm re-estimation and the like
            self.require_full_module()
            if not self._in_scope(r, e):
                continue
            if root_of(key) in ("self", "cls") and class_keeps_eval(self.analysis, r, key):
                continue
            if self._eval_helper_before(r, e, key) or self._callers_evaluate(r, key, 0):
                continue
            self._report(r, e, key, region, trained, training)

    # -- verdict ---------------------------------------------------------------------------------------
    @staticmethod
    def _training_step(e: Event, region: Region, training: list) -> bool:
        """Is this no_grad forward part of a training iteration (teacher, target network, feature cache)?
        It is when a backward or an optimizer step follows it in the same iteration of the same loop."""
        outer = region.place.loops if region.place is not None else ()
        if len(e.place.loops) > len(outer):
            return False  # it iterates data under no_grad: an evaluation
        loop = outer[-1] if outer else None
        return any((t.place.loops[-1] if t.place.loops else None) is loop and t.index > region.end
                   for t in training)

    def _in_scope(self, r: Routine, e: Event) -> bool:
        """Training and evaluation code: a file that trains or switches modes somewhere, or a pass over a
        data loader. (Inference libraries leave the mode to their caller: `from_pretrained` models are
        already in eval mode.) `may_match` checks the same on the text."""
        if any(iterates_loader(self.ctx, loop) for loop in e.place.loops):
            return True
        return manages_training(self.analysis)

    @classmethod
    def may_match(cls, text: str) -> bool:
        """The triggers, plus the scope on the whole text: a file that trains or switches modes, or loops
        over a loader. (Region triggers stay the no_grad group alone: the scope may sit in another region.)"""
        return super().may_match(text) and bool(TRAINING_TEXT.search(text) or loader_loop_text(text))

    @staticmethod
    def _mode_set_before(r: Routine, e: Event, key: str) -> bool:
        aliases = r.aliases(key)
        for m in r.events:
            if m.kind in (EVAL, MODE) and m.key in aliases:
                if m.index < e.index and not exclusive(m.place, e.place):
                    return True
                if any(loop in m.place.loops for loop in e.place.loops):
                    return True  # set later in a loop that runs the forward again
            elif m.kind == ASSIGN and m.index < e.index and set(m.extra["targets"]) & aliases:
                if sets_eval_chain(m.extra.get("value")):
                    return True
            elif m.kind == CALL and m.index < e.index and EVALISH_CALLEE.search(callee_name(m.node.func)):
                receiver = obj_key(m.node.func.value) if isinstance(m.node.func, cst.Attribute) else None
                if receiver in aliases or any(obj_key(a.value) in aliases for a in m.node.args):
                    return True
            elif m.kind == CALL and m.index < e.index and isinstance(m.node.func, cst.Attribute) and \
                    m.node.func.attr.value == "apply" and obj_key(m.node.func.value) in aliases:
                return True  # model.apply(set_bn_eval)
        return False

    def _eval_helper_before(self, r: Routine, e: Event, key: str) -> bool:
        """A routine of this module, called before the forward, leaves the model in eval mode."""
        for call, target, inner in helper_calls(self.analysis, r, key, before=e.index):
            if exclusive(call.place, e.place):
                continue
            if final_mode(self.analysis, target, inner) in ("eval", "unknown"):
                return True
        return False

    def _callers_evaluate(self, r: Routine, key: str, depth: int) -> bool:
        """Every call site of `r` in this module comes after `.eval()` on the object `r` calls `key`."""
        if depth >= _MAX_DEPTH:
            return False
        is_param = r.is_param(key) and root_of(key) not in ("self", "cls")
        if not (is_param or root_of(key) in ("self", "cls") or r.is_free(key)):
            return False
        sites = self.analysis.call_sites(r)
        if not sites:
            return False
        for caller, call in sites:
            if framework_eval_hook(self.ctx, caller):
                continue
            if is_param:
                value = bind_arguments(r, call.node).get(root_of(key))
                outer = obj_key(value) if value is not None else None
                if outer is None:
                    return False
                outer_key = outer + key[len(root_of(key)):]
            else:
                outer_key = key
            if self._mode_set_before(caller, call, outer_key) or self._eval_helper_before(caller, call, outer_key):
                continue
            if self._callers_evaluate(caller, outer_key, depth + 1):
                continue
            return False
        return True

    # -- report and fix --------------------------------------------------------------------------------
    def _report(self, r: Routine, e: Event, key: str, region: Region, trained: list, training: list) -> None:
        where = self.at(region.node)
        message = (f"`{key}` is called under `{region.label}` ({where}) with no `{key}.eval()` before it in "
                   f"{self.where(r)}: dropout stays on and BatchNorm normalizes with, and updates its running "
                   "statistics from, evaluation batches")
        if trained:
            message += f" (`{key}.train()` at {self.at(trained[-1].node)} is still in effect)"
        self.report(e.node, message, self._fix(r, e, key, region, training), statement=e.stmt)

    def _fix(self, r: Routine, e: Event, key: str, region: Region, training: list):
        statement = cst.parse_statement(f"{key}.eval()\n")
        if region.place is None:  # decorator: first statement of the body
            if root_of(key) in r.locals or not isinstance(r.node.body, cst.IndentedBlock):
                return None
            body = list(r.node.body.body)
            first = 1 if body and _is_docstring(body[0]) else 0
            if first >= len(body):
                return None
            anchor, anchor_index, anchor_loops = body[first], 0, ()
        else:
            anchor, anchor_index, anchor_loops = region.place.stmts[-1], region.start, region.place.loops
            rebound = [a for a in r.of(ASSIGN) if a.index > anchor_index and a.index < e.index
                       and root_of(key) in a.extra["targets"]]
            if rebound:
                return None
        safe = not self._leaks_into_training(r, key, anchor_index, anchor_loops, training)
        return self.insert_before(anchor, [statement], safe=safe,
                                  message=f"Call `{key}.eval()` before the no_grad block")

    @staticmethod
    def _leaks_into_training(r: Routine, key: str, at: int, loops: tuple, training: list) -> bool:
        """Could a backward or optimizer step run after the inserted `.eval()` with no `.train()` between?"""
        aliases = r.aliases(key)
        trains = [t for t in r.events if t.kind in (TRAIN, MODE) and t.key in aliases]
        for t in training:
            if t.index > at:
                if not any(at < x.index < t.index for x in trains):
                    return True
            else:
                shared = [loop for loop in loops if loop in t.place.loops]
                if shared and not any(shared[0].start < x.index < t.index for x in trains):
                    return True
        return False


def _self_derived(r: Routine, key: str) -> bool:
    """`decoder = self.get_decoder()`: a local that names one of `self`'s sub-modules."""
    root = root_of(key)
    return any(root in a.extra["targets"] and a.extra.get("value") is not None
               and root_name(a.extra["value"]) == "self" for a in r.of(ASSIGN))


def _is_docstring(stmt) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and isinstance(stmt.body[0], cst.Expr)
            and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))

