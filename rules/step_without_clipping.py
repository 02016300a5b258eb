from __future__ import annotations

import re
from typing import Optional

import libcst as cst

from gradlint.flow.apis import FSDP1, module_factory
from gradlint.flow.base import RoutineRule
from gradlint.flow.calls import enclosing_class
from gradlint.flow.events import ASSIGN, BACKWARD, CALL, CLIP, STEP, TRAIN, Event, Routine, obj_key, root_of
from gradlint.flow.forwards import forward_of
from gradlint.flow.kinds import ACCELERATOR, FABRIC
from gradlint.flow.settings import Settings
from gradlint.nodes import format_number
from gradlint.rule import Invalid, Option, Valid

_EVIDENCE_TEXT = re.compile(r"(?i)clip|max_norm|max_grad|ForCausalLM|LMHead|ForConditionalGeneration|Seq2SeqLM|"
                            r"ForMaskedLM|ForPreTraining")
_ENGINE_NAME = re.compile(r"(?i)deepspeed|megatron")
_ENGINE_ATTRIBUTES = frozenset({"deepspeed_plugin", "megatron_lm_plugin", "DEEPSPEED", "MEGATRON_LM"})
_PARAM_GROUPS = '[p for group in {opt}.param_groups for p in group["params"]]'
_TORCH_CLIPS = ("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_value_", "torch.nn.utils.clip_grad_norm",
                "torch.nn.utils.clip_grad.clip_grad_norm_", "torch.nn.utils.clip_grad.clip_grad_value_")


class StepWithoutClipping(RoutineRule):
    """
    ## What it does
    Finds an optimizer step (`optimizer.step()`, `scaler.step(optimizer)`) that applies the gradients of a
    backward pass of the same routine (`loss.backward()`, `scaler.scale(loss).backward()`,
    `accelerator.backward(loss)`, `fabric.backward(loss)`, `self.manual_backward(loss)`, or a routine of this
    file that runs one) without clipping them on any path, **where the code says clipping is wanted**:

    - the routine clips elsewhere: on another path to a step (an AMP branch clips, the fp32 branch does
      not), for another optimizer it steps, or before the backward (which clips the zeroed gradients);
    - the file declares a gradient-clipping setting that nothing reads: an option (`--clip-grad`,
      `--max-grad-norm`; a bare `--clip` or `--max-norm` whose help text speaks of gradients), an attribute
      or config field (`self.grad_clip`, `max_grad_norm: float`), or a parameter of this routine
      (`grad_clip=1.0`); an option is read by code we cannot see when the parsed options are handed to it
      together with the model or the optimizer, or returned;
    - the file imports a clipping function (`from torch.nn.utils import clip_grad_norm_`) and never calls it;
    - the model is a transformers language model (`AutoModelForCausalLM`, `*ForConditionalGeneration`,
      `*LMHeadModel`... from `from_pretrained`/`from_config`), or comes from outside the routine in a file
      that builds one: language-model recipes clip (the library's `Trainer` clips at 1.0 by default), since
      loss spikes on long sequences are what clipping is for.

    Clipping without evidence that it is wanted is a choice, not a defect (pytorch/examples' mnist and
    imagenet loops do not clip, and need not). A recurrent network is no such evidence on its own: whether
    its gradients explode depends on the sequence length and the recipe (an LSTM over MNIST's 28 rows
    trains fine unclipped; a language model over long BPTT windows does not), which the code does not say.

    Clipping is `torch.nn.utils.clip_grad_norm_`/`clip_grad_value_`, timm's `dispatch_clip_grad`,
    `accelerator.clip_grad_norm_`, `fabric.clip_gradients`, Lightning's `self.clip_gradients`, an FSDP
    module's `model.clip_grad_norm_`, a routine of this file that does one of these (a wrapper's own
    `step()` that clips when configured), or a call we cannot see whose name says it clips. Clipping under a condition (`if args.clip_grad: ...`) counts: the switch is the
    user's. The optimizer must be one by the facts (a `torch.optim` class, `param_groups`, `zero_grad()` and
    `step()`...); a DeepSpeed engine's `step()` is none (DeepSpeed clips from its config), nor is a step
    with a closure (LBFGS, Lightning's automatic optimization), nor a step after `accelerator.backward` in a
    file that runs Accelerate with DeepSpeed or Megatron-LM (the engine clips from its configuration).

    ## Why is this bad?
    One outlier batch (a long sequence, a label error, a loss spike early in warmup) produces a gradient
    orders of magnitude larger than usual; without clipping, that single step moves the weights far away
    and training diverges or turns NaN. Here the code itself says it wants the bound: the unclipped path is
    an omission, not a choice.

    ## Example
    ```python
    def train(model, loader, optimizer, max_grad_norm=1.0):
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    ```

    ## Use instead
    ```python
    def train(model, loader, optimizer, max_grad_norm=1.0):
        for x, y in loader:
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_grad_norm)
            optimizer.step()
    ```
    Under a GradScaler the gradients are unscaled first (`scaler.unscale_(optimizer)`), or the threshold
    would apply to scaled gradients; with Accelerate, Fabric and Lightning the fix calls their clipping
    method, which unscales for you; an FSDP (`FullyShardedDataParallel`) model clips with
    `model.clip_grad_norm_(...)`, which sees every shard.

    ## Fix safety
    Always unsafe: clipping changes every healthy step whose gradient norm exceeds the bound (on
    pytorch/examples' mnist the final loss went from 0.127 to 0.0067 on a run with no NaN), so it changes
    results beyond the defect. The fix inserts the clip before the step: the parameters of the model whose
    `.parameters()` built the optimizer (else the one module the routine trains), or the optimizer's own
    parameter groups. Torch's `clip_grad_norm_` is offered only on a model built in this file: one built
    elsewhere may be wrapped by FSDP, whose shards torch's function would clip one by one (FSDP's own
    `model.clip_grad_norm_` is used where the facts show the wrapper). Its bound is the setting the code declares when the step's routine can read it
    (`if args.clip_grad: torch.nn.utils.clip_grad_norm_(..., max_norm=args.clip_grad)`, so that an unset or
    zero setting keeps the step as it is), else `max-norm`, a guess. No fix after a scaled backward that
    does not go through `scaler.step`, where a routine that unscales runs later on the path (a second
    `unscale_` raises), or where the facts do not say how the backward ran (a helper, an engine we cannot
    identify).

    ## Options
    - `max-norm` (default `1.0`): the `max_norm` the fix passes.
    """

    code = "GL005"
    reports_in_tests = False
    name = "step-without-clipping"
    summary = "Optimizer step with no gradient clipping where the code says it wants clipping"
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
            "        return loss.detach()\n\n"
            "    def _clip_grad_norm(self, model):\n"
            "        return self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)\n",
            note="HF Trainer: the backward lives in training_step, the clip in a method behind max_grad_norm"),
        Valid(
            "def optimizer_step(self, optimizer, closure):\n"
            "    optimizer.step(closure=closure)\n",
            note="Lightning automatic optimization: the closure runs backward and clipping"),
        Valid(
            "import torch\n\n\ndef fit(model, x, y, clip=1.0):\n"
            "    optimizer = torch.optim.LBFGS(model.parameters())\n"
            "    def closure():\n"
            "        optimizer.zero_grad()\n"
            "        loss = torch.nn.functional.mse_loss(model(x), y)\n"
            "        loss.backward()\n"
            "        return loss\n"
            "    for _ in range(20):\n"
            "        optimizer.step(closure)\n",
            note="LBFGS: a step with a closure"),
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
            "import deepspeed\n\n\ndef train(model, loader, ds_config, max_grad_norm=1.0):\n"
            "    ds_config['gradient_clipping'] = max_grad_norm\n"
            "    model_engine, optimizer, _, _ = deepspeed.initialize(model=model, config=ds_config)\n"
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
            "def train_epoch(model, loader, optimizer, scheduler, max_norm=1.0):\n"
            "    for x, y in loader:\n"
            "        loss = model(x, y)\n"
            "        loss.backward()\n"
            "        clip_gradients(model, max_norm)\n"
            "        optimizer.step()\n"
            "    scheduler.step()\n",
            note="a call we cannot see whose name says it clips"),
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
        Valid(
            "import torch\nimport torch.nn.functional as F\n\n\n"
            "def train(args, model, device, train_loader, optimizer, epoch):\n"
            "    model.train()\n"
            "    for batch_idx, (data, target) in enumerate(train_loader):\n"
            "        data, target = data.to(device), target.to(device)\n"
            "        optimizer.zero_grad()\n"
            "        loss = F.nll_loss(model(data), target)\n"
            "        loss.backward()\n"
            "        optimizer.step()\n",
            note="pytorch/examples mnist: nothing says clipping is wanted, and it is not mandatory"),
        Valid(
            "import torch\n\n\nclass OptimizerWrapper:\n"
            "    def __init__(self, optimizer, model, max_norm=None):\n"
            "        self.optimizer, self.model, self.max_norm = optimizer, model, max_norm\n\n"
            "    def backward(self, loss):\n"
            "        loss.backward()\n\n"
            "    def zero_grad(self):\n"
            "        self.optimizer.zero_grad()\n\n"
            "    def step(self):\n"
            "        if self.max_norm is not None:\n"
            "            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)\n"
            "        self.optimizer.step()\n\n"
            "    def train_step(self, loss):\n"
            "        self.zero_grad()\n"
            "        self.backward(loss)\n"
            "        self.step()\n",
            note="an optimizer wrapper: its own step() clips when configured, backward() is a helper"),
        Valid(
            "import torch\nfrom torch.distributed.fsdp import FullyShardedDataParallel as FSDP\n\n\n"
            "def train(model, loader, rank, max_grad_norm):\n"
            "    model = FSDP(model)\n"
            "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "    for batch in loader:\n"
            "        loss = model(**batch).loss\n"
            "        loss.backward()\n"
            "        model.clip_grad_norm_(max_grad_norm)\n"
            "        optimizer.step()\n",
            note="an FSDP model clips with its own clip_grad_norm_"),
        Valid(
            "import argparse\n\nimport torch\n\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--clip_value', type=float, default=0.01, help='lower and upper clip value for "
            "disc. weights')\n"
            "opt = parser.parse_args()\n"
            "optimizer_D = torch.optim.Adam(discriminator.parameters())\n"
            "for imgs in dataloader:\n"
            "    optimizer_D.zero_grad()\n"
            "    d_loss = -torch.mean(discriminator(imgs))\n"
            "    d_loss.backward()\n"
            "    optimizer_D.step()\n",
            note="PyTorch-GAN wgan_gp: a WGAN option that clips weights, left unused by the gradient penalty; "
                 "a bare `clip_value` says gradients only with a help text that does"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef train(loader, criterion, max_grad_norm=1.0):\n"
            "    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))\n"
            "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        loss = criterion(model(x), y)\n"
            "        loss.backward()\n"
            "        optimizer.step()\n",
            "import torch\n"
            "\n"
            "\n"
            "def train(loader, criterion, max_grad_norm=1.0):\n"
            "    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))\n"
            "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        loss = criterion(model(x), y)\n"
            "        loss.backward()\n"
            "        if max_grad_norm:\n"
            "            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_grad_norm)\n"
            "        optimizer.step()\n",
            unsafe=True, note="a max_grad_norm parameter that nothing reads"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass CharRNN(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.rnn = nn.LSTM(64, 256, num_layers=2)\n"
            "        self.head = nn.Linear(256, 64)\n\n"
            "    def forward(self, x):\n"
            "        return self.head(self.rnn(x)[0])\n\n\n"
            "def train(loader, clip_grad=1.0):\n"
            "    model = CharRNN()\n"
            "    optimizer = torch.optim.Adam(model.parameters())\n"
            "    scaler = torch.amp.GradScaler()\n"
            "    model.train()\n"
            "    for x, y in loader:\n"
            "        with torch.autocast('cuda'):\n"
            "            loss = torch.nn.functional.cross_entropy(model(x), y)\n"
            "        scaler.scale(loss).backward()\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n"
            "        optimizer.zero_grad(set_to_none=True)\n",
            "import torch\n"
            "from torch import nn\n"
            "\n"
            "\n"
            "class CharRNN(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.rnn = nn.LSTM(64, 256, num_layers=2)\n"
            "        self.head = nn.Linear(256, 64)\n"
            "\n"
            "    def forward(self, x):\n"
            "        return self.head(self.rnn(x)[0])\n"
            "\n"
            "\n"
            "def train(loader, clip_grad=1.0):\n"
            "    model = CharRNN()\n"
            "    optimizer = torch.optim.Adam(model.parameters())\n"
            "    scaler = torch.amp.GradScaler()\n"
            "    model.train()\n"
            "    for x, y in loader:\n"
            "        with torch.autocast('cuda'):\n"
            "            loss = torch.nn.functional.cross_entropy(model(x), y)\n"
            "        scaler.scale(loss).backward()\n"
            "        if clip_grad:\n"
            "            scaler.unscale_(optimizer)\n"
            "            nn.utils.clip_grad_norm_(model.parameters(), max_norm=clip_grad)\n"
            "        scaler.step(optimizer)\n"
            "        scaler.update()\n"
            "        optimizer.zero_grad(set_to_none=True)\n",
            unsafe=True, note="a clip_grad parameter nothing reads; a GradScaler: unscale first; the model is the one whose "
                              "parameters built the optimizer"),
        Invalid(
            "from torch.nn.utils import clip_grad_norm_\n\n\n"
            "def train(net, loader, optimizer, accum_steps):\n"
            "    for step, (x, y) in enumerate(loader):\n"
            "        loss = net(x, y) / accum_steps\n"
            "        loss.backward()\n"
            "        if (step + 1) % accum_steps == 0:\n"
            "            optimizer.step()  # update\n"
            "            optimizer.zero_grad()\n",
            None,
            note="gradient accumulation; clip_grad_norm_ imported and never called; `net` comes from a caller, "
                 "so whether FSDP wraps it (and how to clip it) is not visible: no fix"),
        Invalid(
            "from accelerate import Accelerator\n\n\n"
            "def train(model, loader, optimizer, accelerator, max_grad_norm=1.0):\n"
            "    model.train()\n"
            "    for batch in loader:\n"
            "        with accelerator.accumulate(model):\n"
            "            loss = model(**batch).loss\n"
            "            accelerator.backward(loss)\n"
            "            optimizer.step()\n"
            "            optimizer.zero_grad()\n\n\n"
            "def main():\n"
            "    accelerator = Accelerator()\n"
            "    model, optimizer, loader = accelerator.prepare(build(), make_optimizer(), make_loader())\n"
            "    train(model, loader, optimizer, accelerator)\n",
            "from accelerate import Accelerator\n"
            "\n"
            "\n"
            "def train(model, loader, optimizer, accelerator, max_grad_norm=1.0):\n"
            "    model.train()\n"
            "    for batch in loader:\n"
            "        with accelerator.accumulate(model):\n"
            "            loss = model(**batch).loss\n"
            "            accelerator.backward(loss)\n"
            "            if accelerator.sync_gradients and max_grad_norm:\n"
            "                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)\n"
            "            optimizer.step()\n"
            "            optimizer.zero_grad()\n"
            "\n"
            "\n"
            "def main():\n"
            "    accelerator = Accelerator()\n"
            "    model, optimizer, loader = accelerator.prepare(build(), make_optimizer(), make_loader())\n"
            "    train(model, loader, optimizer, accelerator)\n",
            unsafe=True, note="Accelerate: clip on the synced step only, through the accelerator"),
        Invalid(
            "import torch\n\n\ndef train_step(batch, model_a, model_b, opt_a, opt_b):\n"
            "    opt_a.zero_grad()\n"
            "    model_a(batch).backward()\n"
            "    opt_a.step()\n"
            "    opt_b.zero_grad()\n"
            "    model_b(batch).backward()\n"
            "    torch.nn.utils.clip_grad_norm_(model_b.parameters(), 1.0)\n"
            "    opt_b.step()\n",
            None,
            note="one optimizer clipped, its twin not; models from a caller: no fix"),
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
            None,
            note="the AMP branch clips, the fp32 branch does not"),
        Invalid(
            "import torch\n\n\ndef train(model, loader, optimizer):\n"
            "    for x, y in loader:\n"
            "        optimizer.zero_grad()\n"
            "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
            "        model(x, y).backward()\n"
            "        optimizer.step()\n",
            None,
            note="clipping before backward clips the zeroed gradients"),
        Invalid(
            "import torch\n\n\nclass Trainer:\n"
            "    def __init__(self, model, grad_clip=None):\n"
            "        self.model = model\n"
            "        self.grad_clip = grad_clip\n"
            "        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n\n"
            "    def fit(self, loader):\n"
            "        for batch in loader:\n"
            "            self.optimizer.zero_grad()\n"
            "            self.model(batch).backward()\n"
            "            self.optimizer.step()\n",
            None,
            note="a grad_clip attribute stored and never read; the optimizer is built in __init__ from a model "
                 "the class is handed: no fix"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass Solver:\n"
            "    def __init__(self, max_grad_norm=5.0):\n"
            "        self.max_grad_norm = max_grad_norm\n"
            "        self.net = nn.GRU(32, 64)\n"
            "        self.o = torch.optim.RMSprop(self.net.parameters())\n\n"
            "    def update(self, batch):\n"
            "        self.o.zero_grad()\n"
            "        self.net(batch)[0].mean().backward()\n"
            "        self.o.step()\n",
            "import torch\n"
            "from torch import nn\n"
            "\n"
            "\n"
            "class Solver:\n"
            "    def __init__(self, max_grad_norm=5.0):\n"
            "        self.max_grad_norm = max_grad_norm\n"
            "        self.net = nn.GRU(32, 64)\n"
            "        self.o = torch.optim.RMSprop(self.net.parameters())\n"
            "\n"
            "    def update(self, batch):\n"
            "        self.o.zero_grad()\n"
            "        self.net(batch)[0].mean().backward()\n"
            "        if self.max_grad_norm:\n"
            "            nn.utils.clip_grad_norm_(self.net.parameters(), max_norm=self.max_grad_norm)\n"
            "        self.o.step()\n",
            unsafe=True, note="an optimizer known by its construction in __init__, not by its name; a max_grad_norm "
                              "attribute nothing reads"),
        Invalid(
            "import lightning as L\n\n\nclass GAN(L.LightningModule):\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        opt_g, opt_d = self.optimizers()\n"
            "        d_loss = self.discriminator_loss(batch)\n"
            "        opt_d.zero_grad()\n"
            "        self.manual_backward(d_loss)\n"
            "        self.clip_gradients(opt_d, gradient_clip_val=1.0, gradient_clip_algorithm='norm')\n"
            "        opt_d.step()\n"
            "        g_loss = self.generator_loss(batch)\n"
            "        opt_g.zero_grad()\n"
            "        self.manual_backward(g_loss)\n"
            "        opt_g.step()\n",
            "import lightning as L\n\n\nclass GAN(L.LightningModule):\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        opt_g, opt_d = self.optimizers()\n"
            "        d_loss = self.discriminator_loss(batch)\n"
            "        opt_d.zero_grad()\n"
            "        self.manual_backward(d_loss)\n"
            "        self.clip_gradients(opt_d, gradient_clip_val=1.0, gradient_clip_algorithm='norm')\n"
            "        opt_d.step()\n"
            "        g_loss = self.generator_loss(batch)\n"
            "        opt_g.zero_grad()\n"
            "        self.manual_backward(g_loss)\n"
            '        self.clip_gradients(opt_g, gradient_clip_val=1.0, gradient_clip_algorithm="norm")\n'
            "        opt_g.step()\n",
            unsafe=True, note="Lightning manual optimization (the Trainer's gradient_clip_val does not apply): "
                              "the discriminator is clipped, the generator not"),
        Invalid(
            "import torch\nfrom torch.nn.utils import clip_grad_norm_\n"
            "model = torch.nn.LSTM(4, 1)\n"
            "opt = torch.optim.Adam(model.parameters())\n"
            "while True:\n"
            "    loss = model(x)[0].pow(2).mean(); loss.backward(); opt.step()\n",
            None, note="a script; step and backward on one line: no place to insert, no fix"),
        Invalid(
            "import lightning as L\nimport torch\n"
            "def train(model, opt, data, fabric, gradient_clip_val=1.0):\n"
            "    for batch in data:\n"
            "        fabric.backward(model(batch))\n"
            "        opt.step()\n\n\n"
            "def main():\n"
            "    fabric = L.Fabric()\n"
            "    net = Net()\n"
            "    model, opt = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))\n"
            "    train(model, opt, loader, fabric)\n",
            "import lightning as L\n"
            "import torch\n"
            "def train(model, opt, data, fabric, gradient_clip_val=1.0):\n"
            "    for batch in data:\n"
            "        fabric.backward(model(batch))\n"
            "        if gradient_clip_val:\n"
            "            fabric.clip_gradients(model, opt, max_norm=gradient_clip_val)\n"
            "        opt.step()\n"
            "\n"
            "\n"
            "def main():\n"
            "    fabric = L.Fabric()\n"
            "    net = Net()\n"
            "    model, opt = fabric.setup(net, torch.optim.SGD(net.parameters(), lr=0.1))\n"
            "    train(model, opt, loader, fabric)\n",
            unsafe=True, note="Fabric: clip through fabric.clip_gradients"),
        Invalid(
            "import argparse\n\nimport torch\nfrom torch import nn\n\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--lr', type=float, default=0.1)\n"
            "parser.add_argument('--clip-grad', type=float, default=1.0, help='max gradient norm')\n"
            "args = parser.parse_args()\n\n"
            "model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))\n"
            "optim = torch.optim.SGD(model.parameters(), lr=args.lr)\n"
            "for x, y in loader:\n"
            "    optim.zero_grad()\n"
            "    nn.functional.mse_loss(model(x), y).backward()\n"
            "    optim.step()\n",
            "import argparse\n"
            "\n"
            "import torch\n"
            "from torch import nn\n"
            "\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.add_argument('--lr', type=float, default=0.1)\n"
            "parser.add_argument('--clip-grad', type=float, default=1.0, help='max gradient norm')\n"
            "args = parser.parse_args()\n"
            "\n"
            "model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))\n"
            "optim = torch.optim.SGD(model.parameters(), lr=args.lr)\n"
            "for x, y in loader:\n"
            "    optim.zero_grad()\n"
            "    nn.functional.mse_loss(model(x), y).backward()\n"
            "    if args.clip_grad:\n"
            "        nn.utils.clip_grad_norm_(model.parameters(), max_norm=args.clip_grad)\n"
            "    optim.step()\n",
            unsafe=True, note="a --clip-grad option nothing reads; `optim` (the conventional name of torch.optim) "
                              "is a local optimizer here, shadowing the module"),
        Invalid(
            "import torch\nfrom torch.distributed.fsdp import FullyShardedDataParallel as FSDP\n\n\n"
            "def train(model, loader, rank, max_grad_norm=1.0):\n"
            "    model = FSDP(model)\n"
            "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "    for batch in loader:\n"
            "        loss = model(**batch).loss\n"
            "        loss.backward()\n"
            "        optimizer.step()\n",
            "import torch\n"
            "from torch.distributed.fsdp import FullyShardedDataParallel as FSDP\n"
            "\n"
            "\n"
            "def train(model, loader, rank, max_grad_norm=1.0):\n"
            "    model = FSDP(model)\n"
            "    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)\n"
            "    for batch in loader:\n"
            "        loss = model(**batch).loss\n"
            "        loss.backward()\n"
            "        if max_grad_norm:\n"
            "            model.clip_grad_norm_(max_grad_norm)\n"
            "        optimizer.step()\n",
            unsafe=True, note="an FSDP (FSDP1) model: torch's clip_grad_norm_ would see one shard; its own method "
                              "sees them all"),
        Invalid(
            "import torch\n\n\ndef finetune(loader, grad_clip=1.0):\n"
            "    net = torch.nn.Linear(8, 2)\n"
            "    optim = torch.optim.SGD(net.parameters(), lr=0.1)\n"
            "    for x, y in loader:\n"
            "        optim.zero_grad()\n"
            "        torch.nn.functional.cross_entropy(net(x), y).backward()\n"
            "        optim.step()\n",
            "import torch\n\n\ndef finetune(loader, grad_clip=1.0):\n"
            "    net = torch.nn.Linear(8, 2)\n"
            "    optim = torch.optim.SGD(net.parameters(), lr=0.1)\n"
            "    for x, y in loader:\n"
            "        optim.zero_grad()\n"
            "        torch.nn.functional.cross_entropy(net(x), y).backward()\n"
            "        if grad_clip:\n"
            "            torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=grad_clip)\n"
            "        optim.step()\n",
            unsafe=True, note="`optim`, the conventional name of torch.optim, is a local optimizer here: "
                              "`optim.step()` is its step"),
    ]

    @classmethod
    def may_match(cls, text: str) -> bool:
        """The triggers, plus what any evidence needs on the whole text: a clip (a call, an import, a
        setting: `clip`), a setting named for the bound (`max_norm`, `max_grad_norm`), or a transformers
        language model class. Region triggers stay the backward and the step: the evidence may sit in another
        region."""
        return super().may_match(text) and bool(_EVIDENCE_TEXT.search(text))

    def check(self, r: Routine) -> None:
        steps = [s for s in r.of(STEP) if not s.extra.get("closure") and s.extra["positional"] <= 1]
        if not steps or not any(e.kind in (BACKWARD, CALL) for e in r.events):
            return
        modes, grads = self.modes, self.grads
        states = None
        for step in steps:
            optimizer = modes.optimizer_step(r, step)
            if optimizer is None:
                continue
            if states is None:
                states = grads.observe("clip", r)
            state = states.get(step.index, ())
            backwards = [o for m, o in state if m == "grad"]
            if not backwards or any(m == "clipped" for m, _ in state):
                continue
            last = next(e for e in r.events if e.index == max(backwards))
            if self._engine_clips(r, last):
                continue
            evidence = self._evidence(r, step, optimizer, states)
            if evidence is None:
                continue
            why, setting = evidence
            message = (f"`{self.text(step.node)}` applies the gradients of `{self.text(last.node)}` ("
                       f"{self.at(last.node)}) with no clipping on any path, although {why}: one outlier "
                       "batch can make a huge update that derails training (or NaNs)")
            fix = self._fix(r, step, optimizer, last, self._bound_of(r, setting))
            self.report(step.node, message, fix, statement=step.stmt)

    # -- evidence that clipping is wanted ----------------------------------------------------------------
    def _evidence(self, r: Routine, step: Event, optimizer: str, states: dict) -> Optional[tuple]:
        """(why clipping is wanted, the setting that says so or None), or None when nothing says it is."""
        clip = self._clips_elsewhere(r, states)
        if clip is not None:
            return (f"this routine clips gradients elsewhere (`{self.text(clip.node, 40)}`, "
                    f"{self.at(clip.node)})", None)
        for setting in self._settings().dead_clip_settings():
            if setting.kind == "parameter" and setting.routine is not r:
                continue  # a parameter says something about its own routine only
            if setting.kind == "attribute" and enclosing_class(setting.routine) is not enclosing_class(r):
                continue  # an attribute, about the methods of its class
            return (f"the {setting.kind} `{setting.name}` ({self.at(setting.node)}) says to clip and "
                    "nothing reads it", setting)
        unused = self._unused_clip_import()
        if unused is not None:
            return f"`{unused}` is imported and never called", None
        model = self._model_of(r, optimizer)
        fact = self.facts.of(r, model) if model else None
        if fact is not None and fact.language_model:
            return f"`{model}` is a transformers language model ({fact.how}), whose recipes clip", None
        if fact is None or not fact.built:
            built = self._language_model_built_here()
            if built is not None:
                return (f"the model comes from outside this routine and the file builds a transformers language "
                        f"model (`{self.text(built.node, 50)}`, {self.at(built.node)}), whose recipes clip",
                        None)
        return None

    def _language_model_built_here(self) -> Optional[Event]:
        """The call of this file that builds a transformers language model, when every model the file
        builds is one (`setup_model()` returns a T5 that `train(model, ...)` is handed by another module)."""
        found = None
        facts = self.facts
        for m in self.analysis.all_routines():
            for e in m.of(CALL):
                func = e.node.func
                qualified = e.extra.get("qualified") or facts.qualified(m, func)
                if qualified:
                    built = module_factory(qualified, {})
                    if built is not None:
                        if not built.language_model:
                            return None
                        found = found or e
                    elif qualified.startswith("torch.nn.") and qualified.rsplit(".", 1)[-1][:1].isupper() and \
                            not qualified.startswith("torch.nn.functional."):
                        return None  # a torch.nn module: another model (a loss is one too; it keeps us silent)
                elif isinstance(func, cst.Name) and facts.class_fact(self.analysis.local_class(func.value)).kind \
                        == "module":
                    return None
        return found

    def _engine_clips(self, r: Routine, last: Event) -> bool:
        """A backward through Accelerate in a file that runs DeepSpeed or Megatron-LM: the engine steps, and
        clips from its configuration (`gradient_clipping`, `clip_grad`)."""
        if last.kind != BACKWARD or last.extra.get("via") != "owner" or \
                self.facts.kind(r, last.extra["owner"]) != ACCELERATOR:
            return False
        if any(_ENGINE_NAME.search(q) for q in self.ctx.names.module_imports().values()):
            return True
        return any(x.attr_reads & _ENGINE_ATTRIBUTES for x in self.analysis.all_routines())

    def _bound_of(self, r: Routine, setting) -> Optional[str]:
        """How the step's routine spells the value of the setting that says to clip, if it can."""
        if setting is None:
            return None
        if setting.kind == "parameter":
            return setting.name
        if setting.kind == "attribute" and r.is_method:
            return f"self.{setting.name}"
        if setting.kind == "option":
            holders = sorted(self._settings().options_in(r))
            return f"{holders[0]}.{setting.name}" if holders else None
        return None

    def _clips_elsewhere(self, r: Routine, states: dict) -> Optional[Event]:
        """A clip of this routine (or a call that clips) anywhere, when this step's paths have none."""
        grads = self.grads
        for e in r.events:
            if e.kind == CLIP:
                return e
            if e.kind == CALL:
                target = self.analysis.resolve_call(r, e)
                if target is not None and target is not r and any(
                        m == "clipped" for m, _ in grads.exit("clip", target, 1)):
                    return e
        return None

    def _settings(self) -> Settings:
        an = self.analysis
        found = getattr(an, "_settings", None)
        if found is None:
            found = an._settings = Settings(an)
        return found

    def _unused_clip_import(self) -> Optional[str]:
        imports = self.ctx.names.module_imports()
        for local, qualified in imports.items():
            if qualified in _TORCH_CLIPS and not any(local in x.reads for x in self.analysis.all_routines()):
                return local
        return None

    def _model_of(self, r: Routine, optimizer: str) -> Optional[str]:
        """The module whose parameters `optimizer` steps: the owner of the `.parameters()` that built it (in
        the scope that binds it), else the one module the routine puts in `.train()`, else the one module it
        runs a forward of with gradients."""
        facts = self.facts
        for place in facts._scope_routines(r, optimizer):
            for e in place.assignments_to(optimizer):
                value = e.extra.get("value")
                if value is None:
                    continue
                owners = _parameter_owners(place, value)
                key = _common_prefix(owners)
                if key is None:
                    continue
                if place is not r:
                    key = self._spelled_in(r, place, key)
                if key is not None and facts.is_module(r, key):
                    return key
        if len({self.modes.optimizer_step(r, s) for s in r.of(STEP)} - {None}) > 1:
            return None  # several optimizers: which module each steps is not ours to guess
        trained = {t.key for t in r.of(TRAIN) if t.key and facts.is_module(r, t.key)}
        if len(trained) == 1:
            return trained.pop()
        forwards = {k for e in r.of(CALL) if e.no_grad is None and (k := forward_of(facts, r, e))}
        if len(forwards) == 1:
            return forwards.pop()
        return None

    @staticmethod
    def _spelled_in(r: Routine, place: Routine, key: str) -> Optional[str]:
        """`self.model = model` in __init__: the spelling of `key` that `r` can use."""
        if root_of(key) == "self":
            return key if enclosing_class(r) is not None else None
        if place.is_method:
            return next((k for k in sorted(place.aliases(key)) if root_of(k) == "self"), None) \
                if enclosing_class(r) is not None else None
        if place.name == "<module>" and r.is_free(key):
            return key
        return None

    # -- fix ------------------------------------------------------------------------------------------
    def _fix(self, r: Routine, step: Event, optimizer: str, last: Event, setting: Optional[str]):
        """The clip to insert before the step. `setting`: how the routine spells the bound the code declares
        (`args.clip_grad`); the clip then runs when it is set, with that bound."""
        stmt = step.stmt
        if not isinstance(stmt, cst.SimpleStatementLine) or last.stmt is stmt:
            return None
        max_norm = self.option("max-norm")
        bound = setting or (format_number(max_norm) if isinstance(max_norm, (int, float)) else str(max_norm))
        facts = self.facts
        model = self._model_of(r, optimizer)
        params = f"{model}.parameters()" if model else _PARAM_GROUPS.format(opt=optimizer)
        references, lines, guard = [], [], setting
        if last.kind == BACKWARD and last.extra.get("via") == "lightning":
            lines.append(f'self.clip_gradients({optimizer}, gradient_clip_val={bound}, gradient_clip_algorithm="norm")')
        elif last.kind == BACKWARD and last.extra.get("via") == "owner":
            owner = last.extra["owner"]
            kind = facts.kind(r, owner)
            if kind == ACCELERATOR:
                lines.append(f"{owner}.clip_grad_norm_({params}, {bound})")
                if any(isinstance(c.func, cst.Attribute) and c.func.attr.value == "accumulate"
                       for c in step.place.contexts):
                    guard = f"{owner}.sync_gradients and {setting}" if setting else f"{owner}.sync_gradients"
            elif kind == FABRIC and model is not None:
                lines.append(f"{owner}.clip_gradients({model}, {optimizer}, max_norm={bound})")
            else:
                return None
        elif last.kind == BACKWARD:
            scale = self.grads.observe("scale", r).get(step.index, ())
            scaled = any(m == "scaled" for m, _ in scale)
            scaler_step = step.extra["positional"] == 1
            if scaled and not scaler_step:
                return None  # a scaled backward stepped without the scaler: a bigger problem first
            if scaler_step and any(m in ("scaled", "unknown") for m, _ in scale):
                if any(last.index < e.index < step.index and self.grads.unscales(r, e) for e in r.events):
                    return None
                lines.append(f"{step.key}.unscale_({optimizer})")
            fact = facts.of(r, model) if model is not None else None
            if fact is None or not (fact.built or fact.fsdp1):
                return None  # built elsewhere: wrapped by FSDP (which clips with its own method) or not?
            if not fact.fsdp1 and any(q in FSDP1 for q in self.ctx.names.module_imports().values()):
                return None  # a file that wraps models with FSDP, and this one's wrapping is not proven
            if fact.fsdp1:
                lines.append(f"{model}.clip_grad_norm_({bound})")
            else:
                ref = self.reference("torch.nn.utils.clip_grad_norm_")
                references.append(ref)
                lines.append(f"{cst.Module([]).code_for_node(ref.expr)}({params}, max_norm={bound})")
        else:
            return None  # the backward runs in a helper: how to clip depends on what it does
        code = "".join(line + "\n" for line in lines)
        if guard:
            code = f"if {guard}:\n" + "".join(f"    {line}\n" for line in lines)
        statements = list(cst.parse_module(code).body)
        what = "clip_gradients" if "clip_gradients" in lines[-1] else "clip_grad_norm_"
        return self.insert_before(stmt, statements, safe=False, references=references,
                                  message=f"Clip gradients (`{what}`, max_norm={bound}) before the step")


def _parameter_owners(r: Routine, expr, depth: int = 0) -> list:
    """Keys whose `.parameters()` feed `expr` (following local names one assignment back)."""
    owners: list = []

    def visit(node, depth):
        if isinstance(node, cst.Call):
            func = node.func
            if isinstance(func, cst.Attribute) and func.attr.value in ("parameters", "named_parameters"):
                key = obj_key(func.value)
                if key:
                    owners.append(key)
                    return
        elif isinstance(node, cst.Name) and depth < 2:
            for e in reversed(r.of(ASSIGN)):
                if e.extra["targets"] == (node.value,) and e.extra.get("value") is not None:
                    visit(e.extra["value"], depth + 1)
                    break
            return
        elif isinstance(node, cst.Lambda):
            return
        from gradlint.flow.events import children

        for child in children(node):
            visit(child, depth)

    visit(expr, depth)
    return owners


def _common_prefix(keys: list) -> Optional[str]:
    if not keys:
        return None
    parts = [k.split(".") for k in keys]
    prefix = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        prefix.append(column[0])
    return ".".join(prefix) if prefix and prefix != ["self"] else None

