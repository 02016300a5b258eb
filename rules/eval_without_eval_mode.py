from __future__ import annotations

from typing import Optional

import libcst as cst

from gradlint.flow.base import (
    LOADER_TEXT,
    TRAINING_TEXT,
    RoutineRule,
    first_event_at,
    framework_eval_hook,
    in_module_class,
    manages_training,
    switches_modes,
    trains_anywhere,
)
from gradlint.flow.calls import bind_arguments, enclosing_class
from gradlint.flow.events import (
    ASSIGN,
    BACKWARD,
    CALL,
    EXIT,
    STEP,
    TRAIN,
    Event,
    Region,
    Routine,
    children,
    last_segment,
    obj_key,
    root_of,
)
from gradlint.flow.forwards import fed_by, forward_candidates, names_in
from gradlint.flow.kinds import LOADER
from gradlint.flow.modes import ENTRY, UNSEEN, simulate
from gradlint.flow.outline import Outline
from gradlint.nodes import root_name
from gradlint.rule import Invalid, Valid

_MAX_DEPTH = 3
_INSERTED = ("eval", -1)  # the token of the `.eval()` a fix would insert


class EvalWithoutEvalMode(RoutineRule):
    """
    ## What it does
    Finds an evaluation pass that runs a model under `torch.no_grad()` or `torch.inference_mode()` (a `with`
    block or a decorator) while the model can still be in training mode: on every path that reaches the
    forward, nothing has put it in eval mode (`model.eval()`, `model.train(False)`, on the object or an
    alias such as `model.module`), neither in this routine, nor in a routine of this file it calls first,
    nor at any call site of this routine in this file.

    Reported only on facts:
    - the object called is a module: built by `nn.X(...)`, by a class of this file deriving from
      `nn.Module`, by a known factory (`timm.create_model`, `torchvision.models.*`, `from_config`), wrapped
      by `DistributedDataParallel`, annotated `nn.Module`, or used as one (`.parameters()`,
      `.eval()`/`.train()` on something it also calls); a module that holds no dropout, BatchNorm or other
      mode-dependent layer (`nn.Linear(...)`, a class of this file built from such layers) is not reported,
      and one whose layers we cannot see (a class imported from another module) only in a file that switches
      modes itself (calls `.eval()` or `.train()` somewhere): elsewhere nothing says the mode matters;
    - the forward is an evaluation: it runs once per batch of a loop whose data it receives
      (`for x, y in loader: model(x)`), or inside a loop that trains the same model (a full-batch
      validation). A single forward (a test, a warm-up pass, a frozen projection inside a module's own
      `forward`) is not;
    - it is not part of a training iteration: no backward, optimizer step or training routine of this file
      runs after it in the same iteration (teacher and target-network forwards, RL rollouts, feature caches
      for gradient accumulation);
    - the model is not frozen on purpose: `requires_grad_(False)` on it, `copy.deepcopy(model).eval()`,
      `from_pretrained(...)` (which returns a model in eval mode), or a class or script that puts it in
      eval mode (in a constructor, a setup method, a `_freeze_*` helper) and never back;
    - the file manages training (it trains or switches modes somewhere), or the model was built here in
      training mode and the loop runs over a `DataLoader` built here: a library function that is handed a
      model leaves the mode to its caller.

    Not reported either: Lightning's `validation_step`/`test_step`/`predict_step` hooks and an HF `Trainer`
    subclass's `prediction_step` (the framework switches the mode), an `nn.Module`'s own methods calling
    its sub-modules, a deliberate `.train()` set for the pass, with no training between it and the forward
    (BatchNorm re-estimation after SWA).

    ## Why is this bad?
    `no_grad` only stops gradient tracking; the model is still in training mode. Dropout keeps zeroing
    activations, so validation metrics are noisy and pessimistic, and BatchNorm normalizes with batch
    statistics and updates its running mean and variance with validation data, which leaks the validation
    set into the weights used at test time.

    ## Example
    ```python
    def evaluate(model: nn.Module, loader):
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(-1) == y).sum()
    ```

    ## Use instead
    ```python
    def evaluate(model: nn.Module, loader):
        model.eval()
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(-1) == y).sum()
    ```

    ## Fix safety
    The fix puts the model in eval mode before the no_grad block (first in a decorated routine), on an object
    the facts prove to be a module, so the call exists. It changes the forward of an evaluation that ran in
    training mode, which is the defect, and nothing else when no training can run in the eval mode it sets.
    It inserts a bare `model.eval()` where that is proven: on every path, every backward and optimizer step
    after it is preceded by a `.train()` (a validation inside the epoch loop with `model.train()` at its top),
    and the model does not leave the routine in eval mode towards code that may train it (a model built in
    the routine that does not escape it, a script, a helper whose callers, all in this file, restore
    `.train()` before training; for `self.model`, every method of the class that trains it calls `.train()`
    first). Otherwise, when every run of the `with` block reaches its end, it saves and restores the mode:
    `was_training = model.training; model.eval(); with torch.no_grad(): ...; model.train(was_training)`, so
    whatever runs after the block sees the mode it saw before (safe). Otherwise (a decorated routine, a
    `return` inside the block) the bare `model.eval()` is unsafe: a caller in another module may train
    afterwards (GL006 then asks for the `.train()`). No fix when the model is bound inside the block.

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
            "            for chunk in inputs:\n"
            "                outputs = model(**chunk)\n"
            "        return outputs\n",
            note="HF Trainer: every call site of the helper comes after model.eval()"),
        Valid(
            "import torch\nimport lightning as L\n\n\nclass LitModel(L.LightningModule):\n"
            "    def validation_step(self, batch, batch_idx):\n"
            "        with torch.no_grad():\n"
            "            for chunk in batch:\n"
            "                out = self.model(chunk)\n"
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
            "    model.train()\n"
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
            "    soft = [teacher(images) for images in loader]\n"),
        Valid(
            "import torch\n\n\ndef test(model, loader):\n"
            "    model.train(False)\n"
            "    with torch.inference_mode():\n"
            "        return [model(x) for x in loader]\n"),
        Valid(
            "import torch\nfrom torch import nn\n\n\nclass Detector(nn.Module):\n"
            "    @torch.no_grad()\n"
            "    def predict(self, images):\n"
            "        return [self.head(self.backbone(x)) for x in images]\n",
            note="a module's own method: its caller owns the mode"),
        Valid(
            "import torch\n\n\ndef set_eval(model):\n"
            "    model.eval()\n\n\n"
            "def infer(model, loader):\n"
            "    set_eval(model)\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x in loader]\n",
            note="a helper of the module puts the model in eval first"),
        Valid(
            "import torch\n\n\ndef evaluate(model, loader, criterion):\n"
            "    model.train()\n"
            "    with torch.no_grad():\n"
            "        for x, y in loader:\n"
            "            loss = criterion(x, y)\n"
            "            preds = tokenizer.decode(x)\n",
            note="no network called"),
        Valid(
            "import torch\n\n\ndef generate(model, tokenizer, prompts):\n"
            "    with torch.no_grad():\n"
            "        return [model.generate(**tokenizer(p, return_tensors='pt')) for p in prompts]\n",
            note="inference library code: the caller owns the mode (from_pretrained models are in eval)"),
        Valid(
            "import torch\n\n\ndef setup_model(cfg):\n"
            "    model = build(cfg)\n"
            "    model.eval()\n"
            "    return model\n\n\n"
            "@torch.inference_mode()\n"
            "def main(cfg, loader):\n"
            "    m = setup_model(cfg)\n"
            "    for x in loader:\n"
            "        m(x).backward()\n",
            note="a name is not a type: `setup_model` is a function of this file, and it returns a model in eval"),
        Valid(
            "import torch\nfrom torch import nn\nfrom .task import TrainingTask\n\n\n"
            "class DistillationTask(TrainingTask):\n"
            "    def __init__(self, student, teacher):\n"
            "        super().__init__()\n"
            "        self.student = student\n"
            "        self.teacher = teacher\n"
            "        self._freeze_teacher()\n\n"
            "    def _freeze_teacher(self):\n"
            "        self.teacher.eval()\n"
            "        for p in self.teacher.parameters():\n"
            "            p.requires_grad = False\n\n"
            "    def forward(self, batches):\n"
            "        for x, y in batches:\n"
            "            with torch.no_grad():\n"
            "                soft = self.teacher(x)\n"
            "            loss = kd(self.student(x), soft)\n"
            "            loss.backward()\n",
            note="timm task/distillation.py: a teacher frozen by a _freeze_* helper of the constructor"),
        Valid(
            "import copy\n\nimport torch\n\n\ndef distill(model, loader, optimizer):\n"
            "    teacher = copy.deepcopy(model).eval().requires_grad_(False)\n"
            "    model.train()\n"
            "    for x in loader:\n"
            "        with torch.no_grad():\n"
            "            target = teacher(x)\n"
            "        torch.nn.functional.mse_loss(model(x), target).backward()\n"
            "        optimizer.step()\n",
            note="a frozen copy"),
        Valid(
            "import torch\nfrom torch import nn\n\n\nclass CLIPLoss(nn.Module):\n"
            "    def __init__(self, dim):\n"
            "        super().__init__()\n"
            "        self.proj = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.1))\n\n"
            "    def forward(self, features):\n"
            "        with torch.no_grad():\n"
            "            targets = [self.proj(f) for f in features]\n"
            "        return sum((f - t).pow(2).mean() for f, t in zip(features, targets))\n",
            note="no_grad inside an nn.Module's forward: a frozen projection used in the loss"),
        Valid(
            "import torch\n\n\ndef main(agent, envs, optimizer, num_updates, num_steps):\n"
            "    agent.train()\n"
            "    obs = envs.reset()\n"
            "    for update in range(num_updates):\n"
            "        for step in range(num_steps):\n"
            "            with torch.no_grad():\n"
            "                action, value = agent(obs)\n"
            "            obs = envs.step(action)\n"
            "        train(agent, optimizer)\n\n\n"
            "def train(agent, optimizer):\n"
            "    loss = agent.loss()\n"
            "    loss.backward()\n"
            "    optimizer.step()\n",
            note="Lightning's fabric RL example: a rollout, then the update in a helper of the same iteration"),
        Valid(
            "import torch\nfrom torch import nn\n\n\ndef test_encoder_shapes(model_id):\n"
            "    model = nn.Sequential(nn.Embedding(10, 8), nn.Dropout(0.1))\n"
            "    model.train()\n"
            "    with torch.no_grad():\n"
            "        emb = model(torch.randint(0, 10, (2, 5)))\n"
            "    assert emb.shape == (2, 5, 8)\n",
            note="a test's single forward is not an evaluation pass"),
        Valid(
            "import torch\nfrom torch import nn\n\n"
            "model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8))\n"
            "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
            "example = torch.randn(4, 8)\n"
            "with torch.no_grad():\n"
            "    for _ in range(3):\n"
            "        model(example)  # warm up\n"
            "model(example).sum().backward()\n"
            "optimizer.step()\n",
            note="a warm-up pass: the loop's data does not reach the forward"),
        Valid(
            "import torch\nfrom model import Net\n\nmodel = Net()\n"
            "optimizer = torch.optim.Adam(model.parameters())\n\n\n"
            "def test():\n"
            "    with torch.no_grad():\n"
            "        for x, y in testing_data_loader:\n"
            "            psnr = score(model(x), y)\n\n\n"
            "for epoch in range(10):\n"
            "    for x, y in training_data_loader:\n"
            "        optimizer.zero_grad()\n"
            "        loss_fn(model(x), y).backward()\n"
            "        optimizer.step()\n"
            "    test()\n",
            note="pytorch/examples super_resolution: layers we cannot see (Net is imported), in a file that never "
                 "switches modes"),
        Valid(
            "import torch\nfrom torch import nn\n\n\ndef evaluate(loader):\n"
            "    model = nn.Linear(4, 2)\n"
            "    model.train()\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x in loader]\n",
            note="nn.Linear has no mode-dependent layer"),
        Valid(
            "import torch\n\n\ndef train(model, train_loader, optimizer, swa):\n"
            "    for epoch in range(10):\n"
            "        model.train()\n"
            "        for x, y in train_loader:\n"
            "            torch.nn.functional.cross_entropy(model(x), y).backward()\n"
            "            optimizer.step()\n"
            "    if swa:\n"
            "        optimizer.swap_swa_sgd()\n"
            "        with torch.no_grad():\n"
            "            model.train()\n"
            "            for x, y in train_loader:\n"
            "                model(x)\n",
            note="BatchNorm re-estimation after SWA: train() set for this pass, with no training since"),
    ]
    INVALID = [
        Invalid(
            "import torch\nfrom torch import nn\n\n\n"
            "def evaluate(model, loader):\n"
            "    correct = 0\n"
            "    with torch.no_grad():\n"
            "        for x, y in loader:\n"
            "            correct += (model(x).argmax(-1) == y).sum().item()\n"
            "    return correct\n\n\n"
            "def train_epoch(model, loader, optimizer):\n"
            "    model.train()\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        nn.functional.cross_entropy(model(x), y).backward()\n"
            "        optimizer.step()\n\n\n"
            "model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))\n"
            "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
            "for epoch in range(10):\n"
            "    train_epoch(model, train_loader, optimizer)\n"
            "    print(evaluate(model, val_loader))\n",
            "import torch\nfrom torch import nn\n\n\n"
            "def evaluate(model, loader):\n"
            "    correct = 0\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        for x, y in loader:\n"
            "            correct += (model(x).argmax(-1) == y).sum().item()\n"
            "    return correct\n\n\n"
            "def train_epoch(model, loader, optimizer):\n"
            "    model.train()\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        nn.functional.cross_entropy(model(x), y).backward()\n"
            "        optimizer.step()\n\n\n"
            "model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))\n"
            "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
            "for epoch in range(10):\n"
            "    train_epoch(model, train_loader, optimizer)\n"
            "    print(evaluate(model, val_loader))\n",
            note="the model is an nn.Sequential with dropout (its call site says so); every caller restores "
                 "train() before training: safe"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\n@torch.no_grad()\n"
            "def evaluate(net: nn.Module, val_loader, device):\n"
            '    """Top-1 accuracy."""\n'
            "    hits = 0\n"
            "    for images, labels in val_loader:\n"
            "        hits += (net(images.to(device)).argmax(1) == labels).sum()\n"
            "    return hits\n\n\n"
            "def train_step(net, batch, optimizer):\n"
            "    net.train()\n"
            "    net(batch).mean().backward()\n"
            "    optimizer.step()\n",
            "import torch\nfrom torch import nn\n\n\n@torch.no_grad()\n"
            "def evaluate(net: nn.Module, val_loader, device):\n"
            '    """Top-1 accuracy."""\n'
            "    net.eval()\n"
            "    hits = 0\n"
            "    for images, labels in val_loader:\n"
            "        hits += (net(images.to(device)).argmax(1) == labels).sum()\n"
            "    return hits\n\n\n"
            "def train_step(net, batch, optimizer):\n"
            "    net.train()\n"
            "    net(batch).mean().backward()\n"
            "    optimizer.step()\n",
            unsafe=True,
            note="decorator: eval first in the body, after the docstring; annotated nn.Module; no caller in this "
                 "file, so a caller elsewhere may train afterwards: unsafe"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.body = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))\n\n"
            "    def forward(self, x):\n"
            "        return self.body(x)\n\n\n"
            "def main(train_loader, val_loader, criterion, epochs):\n"
            "    model = Net()\n"
            "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
            "    for epoch in range(epochs):\n"
            "        model.train()\n"
            "        for x, y in train_loader:\n"
            "            optimizer.zero_grad()\n"
            "            criterion(model(x), y).backward()\n"
            "            optimizer.step()\n"
            "        # validation\n"
            "        with torch.no_grad():\n"
            "            val_loss = sum(criterion(model(x), y) for x, y in val_loader)\n",
            "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.body = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))\n\n"
            "    def forward(self, x):\n"
            "        return self.body(x)\n\n\n"
            "def main(train_loader, val_loader, criterion, epochs):\n"
            "    model = Net()\n"
            "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
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
            note="validation inside the epoch loop; train() at the top of the loop and a model that never "
                 "leaves main() keep the fix safe"),
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
            "        was_training = model.training\n"
            "        model.eval()\n"
            "        with torch.no_grad():\n"
            "            for x, y in val_loader:\n"
            "                val = model(x, y)\n"
            "        model.train(was_training)\n",
            note="a bare eval() would leave the next epoch training in eval mode: the fix restores the mode "
                 "after the block"),
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
            "    was_training = model.training\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        val_loss = loss_fn(model(X_val), y_val)\n"
            "    model.train(was_training)\n",
            note="full-batch script: validation after the step is no part of the training step; restored"),
        Invalid(
            "import torch\nfrom torch import inference_mode\n\n\nclass Runner:\n"
            "    def __init__(self, model, train_loader, val_loader):\n"
            "        self.model = model\n"
            "        self.optimizer = torch.optim.AdamW(self.model.parameters())\n"
            "        self.train_loader, self.val_loader = train_loader, val_loader\n\n"
            "    def train_epoch(self):\n"
            "        self.model.train()\n"
            "        for batch in self.train_loader:\n"
            "            self.model(**batch).loss.backward()\n"
            "            self.optimizer.step()\n\n"
            "    def validate(self):\n"
            "        with inference_mode():\n"
            "            for batch in self.val_loader:\n"
            "                logits = self.model(batch['pixel_values'])\n",
            "import torch\nfrom torch import inference_mode\n\n\nclass Runner:\n"
            "    def __init__(self, model, train_loader, val_loader):\n"
            "        self.model = model\n"
            "        self.optimizer = torch.optim.AdamW(self.model.parameters())\n"
            "        self.train_loader, self.val_loader = train_loader, val_loader\n\n"
            "    def train_epoch(self):\n"
            "        self.model.train()\n"
            "        for batch in self.train_loader:\n"
            "            self.model(**batch).loss.backward()\n"
            "            self.optimizer.step()\n\n"
            "    def validate(self):\n"
            "        self.model.eval()\n"
            "        with inference_mode():\n"
            "            for batch in self.val_loader:\n"
            "                logits = self.model(batch['pixel_values'])\n",
            note="a trainer class: its parameters feed an optimizer; the class's training method calls train()"),
        Invalid(
            "import timm\nimport torch\nfrom torch.utils.data import DataLoader\n\n\n"
            "def build_model():\n"
            "    return timm.create_model('resnet50', drop_rate=0.2)\n\n\n"
            "def score(model, loader):\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x in loader]\n\n\n"
            "def main(dataset):\n"
            "    model = build_model()\n"
            "    print(score(model, DataLoader(dataset, batch_size=32)))\n",
            "import timm\nimport torch\nfrom torch.utils.data import DataLoader\n\n\n"
            "def build_model():\n"
            "    return timm.create_model('resnet50', drop_rate=0.2)\n\n\n"
            "def score(model, loader):\n"
            "    model.eval()\n"
            "    with torch.no_grad():\n"
            "        return [model(x) for x in loader]\n\n\n"
            "def main(dataset):\n"
            "    model = build_model()\n"
            "    print(score(model, DataLoader(dataset, batch_size=32)))\n",
            note="the helper's call site does not call eval() either: the model is what build_model() returns "
                 "(timm.create_model, training mode), and it never leaves main(): safe"),
        Invalid(
            "import torch\nfrom torch.utils.data import DataLoader\nfrom torchvision.models import resnet18\n\n"
            "model = resnet18()\nmodel.load_state_dict(torch.load('ckpt.pt'))\n"
            "test_loader = DataLoader(test_set, batch_size=64)\n\n"
            "with torch.no_grad():\n"
            "    preds = [model(images).argmax(-1) for images, _ in test_loader]\n",
            "import torch\nfrom torch.utils.data import DataLoader\nfrom torchvision.models import resnet18\n\n"
            "model = resnet18()\nmodel.load_state_dict(torch.load('ckpt.pt'))\n"
            "test_loader = DataLoader(test_set, batch_size=64)\n\n"
            "model.eval()\n"
            "with torch.no_grad():\n"
            "    preds = [model(images).argmax(-1) for images, _ in test_loader]\n",
            note="an inference script: a model built here in training mode, a pass over a DataLoader built here"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass VAE(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.dec = nn.Sequential(nn.Linear(8, 784), nn.Dropout(0.2))\n\n"
            "    def decode(self, z):\n"
            "        return self.dec(z)\n\n\n"
            "def decode_all(vae: VAE, latents_loader):\n"
            "    with torch.no_grad(), torch.autocast('cuda'):\n"
            "        return [vae.decode(z) for z in latents_loader]\n\n\n"
            "def fit(vae: VAE, loader, optimizer):\n"
            "    vae.train()\n"
            "    for x in loader:\n"
            "        vae(x).sum().backward()\n"
            "        optimizer.step()\n",
            "import torch\nfrom torch import nn\n\n\nclass VAE(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.dec = nn.Sequential(nn.Linear(8, 784), nn.Dropout(0.2))\n\n"
            "    def decode(self, z):\n"
            "        return self.dec(z)\n\n\n"
            "def decode_all(vae: VAE, latents_loader):\n"
            "    vae.eval()\n"
            "    with torch.no_grad(), torch.autocast('cuda'):\n"
            "        return [vae.decode(z) for z in latents_loader]\n\n\n"
            "def fit(vae: VAE, loader, optimizer):\n"
            "    vae.train()\n"
            "    for x in loader:\n"
            "        vae(x).sum().backward()\n"
            "        optimizer.step()\n",
            unsafe=True, note="a forward method (decode) of a module annotated with a class of this file"),
    ]

    @classmethod
    def may_match(cls, text: str) -> bool:
        """The triggers, plus the scope on the whole text: a file that trains or switches modes, or builds a
        DataLoader. (Region triggers stay the no_grad group alone: the scope may sit in another region.)"""
        return super().may_match(text) and bool(TRAINING_TEXT.search(text) or LOADER_TEXT.search(text))

    def check(self, r: Routine) -> None:
        if not r.regions:
            return
        candidates = [(e, keys) for e in r.events if e.no_grad is not None and (keys := forward_candidates(r, e))]
        # Before asking for the whole file: an evaluation runs in a loop, a module's own method calling its
        # sub-modules is none, and `self.helper(...)` calls a method (read on this routine and the outline).
        cls = enclosing_class(r)
        outline = Outline(self.ctx) if cls is not None and self.ctx.partial else None
        module_class = outline.is_module_class(cls.name.value) if outline is not None else None
        methods = (outline.methods(cls.name.value) or set()) if outline is not None else set()
        candidates = [(e, [(k, m) for k, m in keys if not _self_method(k, methods)]) for e, keys in candidates
                      if self._may_evaluate(r, e)]
        candidates = [(e, keys) for e, keys in candidates if keys and not (
            module_class and all(root_of(k) in ("self", "cls") or _self_derived(r, k) for k, _ in keys))]
        if not candidates:
            return
        facts = self.facts  # from here on the verdict reads the whole file
        an = self.analysis
        if framework_eval_hook(an, r):
            return
        own_class = in_module_class(an, r)
        judged: set = set()
        for e, keys in candidates:
            key = next((k for k, _ in keys if facts.is_module(r, k)), None)
            if key is None or key in judged:
                continue
            judged.add(key)
            if own_class and (root_of(key) in ("self", "cls") or _self_derived(r, key)):
                continue  # a module's own sub-modules: whoever calls the module owns the mode
            fact = facts.of(r, key)
            if fact.mode_dependent is False or fact.frozen or facts.frozen(r, key):
                continue
            if fact.mode_dependent is None and not switches_modes(self.analysis):
                continue  # layers we cannot see, in code that never switches modes: nothing says eval matters
            region = e.no_grad
            if self._training_step(r, e, region):
                continue
            if not self._evaluation(r, e, key):
                continue
            modes = self._modes_at(r, key, e, 0)
            if modes is None or any(m in ("eval", "unknown") for m, _ in modes):
                continue
            trained = [t for t in r.of(TRAIN) if ("train", t.index) in modes]
            training = self.modes.training_events(r)
            if any(t.index < e.index and not any(t.index < x.index < e.index for x in training) for t in trained):
                continue  # `.train()` set for this pass, no training since: BatchNorm re-estimation and the like
            if not self._in_scope(r, e, modes):
                continue
            self._report(r, e, key, region, trained)

    # -- verdict ---------------------------------------------------------------------------------------
    def _may_evaluate(self, r: Routine, e: Event) -> bool:
        """What `_evaluation` needs, on syntax: a loop whose data reaches the forward, or a loop around it
        with a backward or a step."""
        if not e.place.loops:
            return False
        if any(fed_by(r, loop, e) for loop in e.place.loops):
            return True
        return any(x.inside(loop) and x.kind in (BACKWARD, STEP) for loop in e.place.loops for x in r.events)

    def _training_step(self, r: Routine, e: Event, region: Region) -> bool:
        """Is this no_grad forward part of a training iteration (teacher, target network, RL rollout,
        feature cache)? It is when a backward, an optimizer step or a training routine of this file runs
        after the no_grad block in the same iteration of a loop around it, and the forward does not itself
        iterate over data inside the block."""
        outer = region.place.loops if region.place is not None else ()
        if len(e.place.loops) > len(outer):
            return False  # it iterates data under no_grad: an evaluation
        training = self.modes.training_events(r)
        return any(t.index > region.end and any(loop in t.place.loops for loop in outer) for t in training)

    def _evaluation(self, r: Routine, e: Event, key: str) -> bool:
        """A pass over data (a loop whose data reaches the forward), or a forward of the model that a loop
        around it trains with a backward or a step of its own (full-batch validation)."""
        for loop in e.place.loops:
            if fed_by(r, loop, e):
                return True
        aliases = r.aliases(key)
        for loop in reversed(e.place.loops):  # the innermost loop around the forward that trains
            if not any(t.inside(loop) and t.kind != CALL for t in self.modes.training_events(r)):
                continue
            trained = [x for x in r.of(CALL) if x.inside(loop) and x.no_grad is None
                       and any(k in aliases for k, _ in forward_candidates(r, x))]
            # A loop over epochs (full-batch training): its no_grad forward is a validation. In a loop over
            # batches, a no_grad forward that does not take the batch is a side computation (a GAN's
            # samples from fixed noise), not an evaluation pass.
            return bool(trained) and not any(fed_by(r, loop, x) for x in trained)
        return False

    def _in_scope(self, r: Routine, e: Event, modes: frozenset) -> bool:
        """Training and evaluation code. A model whose mode comes from code we cannot see (a parameter of a
        helper with no caller here, a model an imported function built) is in scope where the file trains
        (a backward, an optimizer step, a `.train()`); a model built here in training mode, where the file
        switches modes somewhere or the pass runs over a DataLoader built here (`may_match` checks the same
        on the text). Inference libraries leave the mode to their caller."""
        if UNSEEN in modes:  # a mode we cannot see: only code that trains owns it
            return trains_anywhere(self.analysis)
        if manages_training(self.analysis):
            return True
        return any(isinstance(loop.node, (cst.For, cst.CompFor)) and fed_by(r, loop, e) and _iterates_loader(
            self.facts, r, loop.node.iter) for loop in e.place.loops)

    def _modes_at(self, r: Routine, key: str, e: Event, depth: int) -> Optional[frozenset]:
        """The modes `key` can be in at `e`, with `entry` resolved through the callers in this file (None when
        some caller cannot be followed)."""
        modes = self.modes.before(r, key, e)
        if ENTRY not in modes:
            return modes
        rest = modes - {ENTRY}
        entry = self._entry(r, key, depth)
        return None if entry is None else rest | entry

    def _entry(self, r: Routine, key: str, depth: int) -> Optional[frozenset]:
        """The modes `key` can have when `r` starts."""
        facts = self.facts
        if r.node is self.ctx.module:
            return frozenset({UNSEEN})
        root = root_of(key)
        if root in ("self", "cls"):
            sites = self.analysis.call_sites(r)
            if not sites or depth >= _MAX_DEPTH:
                return frozenset({UNSEEN})
            out: set = set()
            for caller, call in sites:
                if framework_eval_hook(self.analysis, caller):
                    out.add(("eval", 0))
                    continue
                found = self._modes_at(caller, key, call, depth + 1)
                if found is None:
                    return None
                out |= found
            return frozenset(out)
        if r.is_free(key):  # a global, or a variable of an enclosing routine (a closure)
            sites = [(c, call) for c, call in self.analysis.call_sites(r)
                     if c.is_free(key) or root in c.params or root in c.locals or c.node is self.ctx.module]
            if not sites:
                return self._global_modes(key)
            if depth >= _MAX_DEPTH:
                return frozenset({UNSEEN})
            out: set = set()
            for caller, call in sites:
                found = self._modes_at(caller, key, call, depth + 1)
                if found is None:
                    return None
                out |= found
            return frozenset(out)
        if root not in r.params:
            return frozenset({UNSEEN})
        sites = self.analysis.call_sites(r)
        if not sites or depth >= _MAX_DEPTH:
            return frozenset({UNSEEN})
        out = set()
        for caller, call in sites:
            if framework_eval_hook(self.analysis, caller):
                out.add(("eval", 0))
                continue
            value = bind_arguments(r, call.node).get(root)
            outer = obj_key(value) if value is not None else None
            if outer is None:
                fact = facts.value(caller, value) if value is not None else None
                if fact is None or not fact.module:
                    return None
                out.add((fact.mode if fact.mode in ("train", "eval") else "unknown", 0))
                continue
            found = self._modes_at(caller, outer + key[len(root):], call, depth + 1)
            if found is None:
                return None
            out |= found
        return frozenset(out)

    def _global_modes(self, key: str) -> frozenset:
        """A module-level model seen from a function: the modes the script leaves it in."""
        module = self.analysis.module_routine
        modes = self.modes.exit(module, key)
        return frozenset(UNSEEN if m == ENTRY else m for m in modes)

    # -- report and fix --------------------------------------------------------------------------------
    def _report(self, r: Routine, e: Event, key: str, region: Region, trained: list) -> None:
        where = self.at(region.node)
        message = (f"`{key}` is called under `{region.label}` ({where}) with no `{key}.eval()` before it in "
                   f"{self.where(r)}: dropout stays on and BatchNorm normalizes with, and updates its running "
                   "statistics from, evaluation batches")
        if trained:
            message += f" (`{key}.train()` at {self.at(trained[-1].node)} is still in effect)"
        self.report(e.node, message, self._fix(r, e, key, region), statement=e.stmt)

    def _fix(self, r: Routine, e: Event, key: str, region: Region):
        statement = cst.parse_statement(f"{key}.eval()\n")
        if region.place is None:  # decorator: first statement of the body
            if not isinstance(r.node.body, cst.IndentedBlock):
                return None
            if root_of(key) in r.locals and not r.is_param(key):
                return None
            body = list(r.node.body.body)
            first = 1 if body and _is_docstring(body[0]) else 0
            if first >= len(body):
                return None
            anchor = body[first]
            at = first_event_at(r, anchor) or e.index
        else:
            anchor = region.place.stmts[-1]
            if any(region.start < a.index < e.index and root_of(key) in a.extra["targets"] for a in r.of(ASSIGN)):
                return None  # bound inside the block
            at = first_event_at(r, anchor) or e.index
        safe = self._safe(r, key, at)
        if not safe and region.place is not None and _restorable(anchor):
            return self._save_and_restore(r, key, anchor)
        return self.insert_before(anchor, [statement], safe=safe, message=f"Call `{key}.eval()` before the no_grad block")

    def _save_and_restore(self, r: Routine, key: str, anchor):
        """`was_training = model.training; model.eval(); with no_grad: ...; model.train(was_training)`: the
        mode the caller had comes back after the block, so nothing after it changes (safe)."""
        base = f"{last_segment(key)}_was_training" if "." in key else "was_training"
        taken = r.locals | set(r.params) | r.reads
        flag, n = base, 1
        while flag in taken:
            n += 1
            flag = f"{base}_{n}"
        lines = list(anchor.leading_lines)
        blank = 0
        while blank < len(lines) and lines[blank].comment is None:
            blank += 1
        save = cst.parse_statement(f"{flag} = {key}.training\n").with_changes(leading_lines=lines[:blank])
        switch = cst.parse_statement(f"{key}.eval()\n")
        restore = cst.parse_statement(f"{key}.train({flag})\n")
        block = cst.FlattenSentinel([save, switch, anchor.with_changes(leading_lines=lines[blank:]), restore])
        return self.rewrite({anchor: block}, message=f"Evaluate `{key}` in eval mode and restore its mode after the "
                                                     "no_grad block")

    def _safe(self, r: Routine, key: str, at: int) -> bool:
        """No training runs in eval mode because of the inserted call, here or after this routine returns."""
        if self._trains_in_eval(r, key, {at: _INSERTED}):
            return False
        exit_modes = self._exit_with(r, key, at)
        if _INSERTED not in exit_modes:
            return True  # restored before the routine ends
        return self._leak_is_harmless(r, key)

    def _trains_in_eval(self, r: Routine, key: str, inject: dict) -> bool:
        """Does a training event of `r` run with the inserted `.eval()` in effect? A call of a training
        routine of this file does only if that routine trains before it sets the mode itself."""
        modes = self.modes.observe(r, key, inject)
        for t in self.modes.training_events(r):
            if _INSERTED not in modes.get(t.index, ()):
                continue
            if t.kind != CALL or self.modes.trains_from_entry(r, t, key):
                return True
        return False

    def _exit_with(self, r: Routine, key: str, at: int) -> frozenset:
        return simulate(r, self.modes._transfer(r, key, 0, {at: _INSERTED}), frozenset({ENTRY}))

    def _leak_is_harmless(self, r: Routine, key: str) -> bool:
        """The routine leaves the model in eval mode: harmless for a script, for a model built here that does
        not escape, and for a helper whose callers (all visible) restore `.train()` before they train."""
        if r.node is self.ctx.module:
            return True
        root = root_of(key)
        if root in r.locals and root not in r.params and not _escapes(r, root):
            return True
        if root in ("self", "cls"):
            trainers = [m for m in self.analysis.methods(enclosing_class(r)) if m is not r and self.modes.trains(m)]
            if not trainers:
                return False
            for m in trainers:
                modes = self.modes.observe(m, key)
                if any(ENTRY in modes.get(t.index, ()) for t in self.modes.training_events(m)):
                    return False
            return True
        sites = self.analysis.call_sites(r)
        if not sites:
            return False  # callers in other modules may train afterwards
        for caller, call in sites:
            value = bind_arguments(r, call.node).get(root) if root in r.params else None
            outer = (obj_key(value) + key[len(root):]) if value is not None and obj_key(value) else (
                key if r.is_free(key) else None)
            if outer is None:
                return False
            after = next((x.index for x in caller.events if x.index > call.index), None)
            if after is None:
                return False
            if self._trains_in_eval(caller, outer, {after: _INSERTED}):
                return False
            if caller.node is not self.ctx.module and _INSERTED in self._exit_with(caller, outer, after) and \
                    not (root_of(outer) in caller.locals and not _escapes(caller, root_of(outer))):
                return False
        return True


def _self_method(key: str, methods: set) -> bool:
    """`self.helper` where the class defines `helper`: a method call, not a sub-module."""
    return key.count(".") == 1 and root_of(key) in ("self", "cls") and key.split(".", 1)[1] in methods


def _restorable(stmt) -> bool:
    """Does every run of this `with` block reach the statement after it (no return, yield, or a break or
    continue that leaves it)? An exception may leave it: the run stops there anyway."""
    if not isinstance(stmt, cst.With) or not isinstance(stmt.body, cst.IndentedBlock):
        return False
    stack = [(child, False) for child in stmt.body.body]
    while stack:
        node, in_loop = stack.pop()
        if isinstance(node, (cst.Return, cst.Yield)) or (isinstance(node, (cst.Break, cst.Continue)) and not in_loop):
            return False
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        inner = in_loop or isinstance(node, (cst.For, cst.While))
        stack.extend((child, inner) for child in children(node))
    return True


def _iterates_loader(facts, r: Routine, iterable) -> bool:
    """`loader`, `enumerate(loader)`, `tqdm(loader)`: an iterable over a DataLoader built in this file."""
    for name in names_in(iterable):
        if facts.kind(r, name) == LOADER:
            return True
    return False


def _escapes(r: Routine, root: str) -> bool:
    """Does a local leave the routine (returned, yielded, stored on an object, handed to a call)?"""
    for e in r.of(EXIT):
        value = e.extra.get("value")
        if value is not None and root in names_in(value):
            return True
    for a in r.of(ASSIGN):
        if any("." in t for t in a.extra["targets"]) and a.extra.get("value") is not None and \
                root in names_in(a.extra["value"]):
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
