from __future__ import annotations

from typing import Optional

import libcst as cst

from gradlint.nodes import arg, arg_value, is_name
from gradlint.rule import Invalid, Rule, Valid
from gradlint.walk import children

SET_MODE = {"torch.autograd.set_detect_anomaly", "torch.autograd.anomaly_mode.set_detect_anomaly",
            "torch.set_anomaly_enabled", "torch.autograd.grad_mode.set_detect_anomaly"}
DETECT = {"torch.autograd.detect_anomaly", "torch.autograd.anomaly_mode.detect_anomaly"}
TRAINERS = {"lightning.Trainer", "lightning.pytorch.Trainer", "pytorch_lightning.Trainer",
            "lightning.pytorch.trainer.Trainer", "lightning.pytorch.trainer.trainer.Trainer",
            "pytorch_lightning.trainer.Trainer", "pytorch_lightning.trainer.trainer.Trainer"}
# Calls a routine may make besides switching anomaly mode on and still be a debugging switch: output only.
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "critical", "log", "print", "rank_zero_info",
               "rank_zero_warn"}


class AnomalyDetectionLeftOn(Rule):
    """
    ## What it does
    Finds autograd's anomaly detection switched on unconditionally:
    `torch.autograd.set_detect_anomaly(True)`, `with torch.autograd.detect_anomaly():`,
    `torch.set_anomaly_enabled(True)`, and Lightning's `Trainer(detect_anomaly=True)`, when they run on
    every execution of the code around them. Not reported: a call under an `if` (a debugging branch
    chosen at run time, such as `if args.debug:`; `if __name__ == "__main__":` is not such a branch), a
    mode given as an expression (`set_detect_anomaly(cfg.detect_anomaly)`), a module that also switches
    the mode off (a hook or callback that toggles it around a region), a routine that does nothing but
    switch it on (a debugging helper that its callers decide to use), and pytest test functions.

    ## Why is this bad?
    Anomaly mode records a Python traceback for every autograd node in the forward pass and checks
    every gradient of the backward pass for NaN, synchronising with the device each time. It exists to
    find where a NaN comes from, and PyTorch warns that it slows execution; left on, every training step
    pays for it (`benchmarks/anomaly_overhead.py` measures a small transformer's step with and without).

    ## Example
    ```python
    torch.autograd.set_detect_anomaly(True)

    for batch in loader:
        ...
    ```

    ## Use instead
    ```python
    if args.detect_anomaly:
        torch.autograd.set_detect_anomaly(True)
    ```
    or remove the call once the NaN is found.

    ## Fix safety
    Safe. The fix removes the call (a `with` item is removed and its body kept; Lightning's
    `detect_anomaly=True` argument is dropped, its default is `False`). Anomaly mode computes nothing:
    every value and gradient is the same without it. Its only effect besides the cost is to raise an
    error when the backward produces NaN, that is where the run was already broken; without it the
    run no longer stops there. The fix never makes code raise where it ran. A call that is not a
    statement of its own (its value is used) has no fix.

    ## Options
    None.
    """

    code = "GL015"
    name = "anomaly-detection-left-on"
    summary = "Autograd anomaly detection switched on unconditionally: every step runs much slower"
    triggers = ((r"detect_anomaly", r"set_anomaly_enabled"),)

    VALID = [
        Valid("import torch\n\n\ndef main(args):\n    if args.detect_anomaly:\n"
              "        torch.autograd.set_detect_anomaly(True)\n    train(args)\n"),
        Valid("import torch\n\n\ndef fit(self):\n    with torch.autograd.set_detect_anomaly(self._detect_anomaly):\n"
              "        self._run()\n", note="Lightning's Trainer: the mode is a setting"),
        Valid("import torch\nfrom mmcv.runner import HOOKS, Hook\n\n\n@HOOKS.register_module()\n"
              "class DetectAnomalyHook(Hook):\n\n    def before_train_iter(self, runner):\n"
              "        torch.autograd.set_detect_anomaly(True)\n\n    def after_train_iter(self, runner):\n"
              "        torch.autograd.set_detect_anomaly(False)\n",
              note="an opt-in hook that switches it on and off again"),
        Valid("import logging\nimport torch\n\nlog = logging.getLogger(__name__)\n\n\n"
              "class AnomalyDetection(object):\n    def __init__(self):\n"
              "        log.info('Toggling PyTorch anomaly detection ON.')\n"
              "        torch.autograd.set_detect_anomaly(True)\n",
              note="a debugging helper: its users decide when to build it"),
        Valid("import torch\n\n\ndef test_detect_anomaly_nan(tmp_path):\n"
              "    with torch.autograd.detect_anomaly():\n        run_nan_step()\n", note="a pytest test"),
        Valid("import torch\ntorch.autograd.set_detect_anomaly(False)\n"),
        Valid("from lightning.pytorch import Trainer\ntrainer = Trainer(detect_anomaly=args.debug)\n"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\nDEVICE = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
            "torch.autograd.set_detect_anomaly(True)\nBATCH_SIZE = 16\n",
            "import torch\n\nDEVICE = torch.device('cuda' if torch.cuda.is_available() else 'cpu')\n"
            "BATCH_SIZE = 16\n", note="a project's config.py"),
        Invalid(
            "def main():\n    import torch\n\n    torch.autograd.set_detect_anomaly(True)\n"
            "    # run the training\n    train()\n\n\nif __name__ == '__main__':\n    main()\n",
            "def main():\n    import torch\n\n    # run the training\n    train()\n\n\n"
            "if __name__ == '__main__':\n    main()\n"),
        Invalid(
            "import torch\n\nfor epoch in range(10):\n    for x, y in loader:\n"
            "        with torch.autograd.detect_anomaly():  # find the NaN\n            loss = model(x, y)\n"
            "            loss.backward()\n        opt.step()\n",
            "import torch\n\nfor epoch in range(10):\n    for x, y in loader:\n"
            "        # find the NaN\n        loss = model(x, y)\n        loss.backward()\n        opt.step()\n"),
        Invalid(
            "import torch\nwith torch.autograd.set_detect_anomaly(True), torch.autocast('cuda'):\n    step()\n",
            "import torch\nwith torch.autocast('cuda'):\n    step()\n"),
        Invalid(
            "import lightning as L\ntrainer = L.Trainer(max_epochs=3, detect_anomaly=True)\ntrainer.fit(model)\n",
            "import lightning as L\ntrainer = L.Trainer(max_epochs=3)\ntrainer.fit(model)\n"),
        Invalid(
            "import torch\n\nif __name__ == '__main__':\n    torch.autograd.set_detect_anomaly(mode=True)\n",
            "import torch\n\nif __name__ == '__main__':\n    pass\n"),
        Invalid(
            "import torch\nflag = torch.autograd.set_detect_anomaly(True)\n", None,
            note="its value is used: reported, no fix"),
    ]

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._branches = 0  # enclosing `if` statements that choose at run time
        self._functions: list = []
        self._candidates: list = []  # (call, statement, kind)
        self._switched_off = False

    def visit_If(self, node: cst.If) -> None:
        if not _always(node.test):
            self._branches += 1

    def leave_If(self, node: cst.If) -> None:
        if not _always(node.test):
            self._branches -= 1

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._functions.append(node)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._functions.pop()

    def visit_Call(self, node: cst.Call) -> None:
        kind = self._switch(node)
        if kind is None:
            return
        if kind == "off":
            self._switched_off = True
            return
        if self._branches or any(f.name.value.startswith("test") for f in self._functions):
            return
        if self._functions and self._only_switches(self._functions[-1]):
            return
        self._candidates.append((node, self.ctx.statement, kind))

    def leave_Module(self, node: cst.Module) -> None:
        if self._switched_off:
            return  # the module manages the mode (on for a region, off again)
        for call, statement, kind in self._candidates:
            shown = "Trainer(detect_anomaly=True)" if kind == "trainer" else self.code_of(call.func) + "(...)"
            self.report(call, f"`{shown}` leaves autograd anomaly detection on for every step: a debugging "
                              "aid that makes training much slower; remove it or put it behind a debug flag",
                        fix=self._fix(call, statement, kind), statement=statement)

    # -- recognising the switch -----------------------------------------------------------------------
    def _switch(self, call: cst.Call) -> Optional[str]:
        """'on', 'with-on' (a context manager), 'trainer', 'off', or None."""
        qualified = self.ctx.resolve(call.func)
        if qualified in SET_MODE:
            mode = arg_value(call, 0, "enabled" if qualified == "torch.set_anomaly_enabled" else "mode")
            if is_name(mode, "True"):
                return "on"
            return "off" if is_name(mode, "False") else None
        if qualified in DETECT:
            return "on"
        if qualified in TRAINERS:
            flag = arg(call, None, "detect_anomaly")
            return "trainer" if flag is not None and is_name(flag.value, "True") else None
        return None

    def _only_switches(self, function: cst.FunctionDef) -> bool:
        """The routine does nothing but switch the mode on (and log it): a helper its callers opt into."""
        body = function.body.body if isinstance(function.body, cst.IndentedBlock) else ()
        for statement in body:
            if not isinstance(statement, cst.SimpleStatementLine):
                return False
            for small in statement.body:
                if isinstance(small, cst.Pass):
                    continue
                if not isinstance(small, cst.Expr):
                    return False
                value = small.value
                if isinstance(value, (cst.SimpleString, cst.ConcatenatedString)):
                    continue  # the docstring
                if not isinstance(value, cst.Call):
                    return False
                if self._switch(value) == "on" or self._logs(value):
                    continue
                return False
        return True

    def _logs(self, call: cst.Call) -> bool:
        if is_name(call.func, "print"):
            return True
        qualified = self.ctx.resolve(call.func) or ""
        if qualified == "warnings.warn" or qualified.startswith("logging."):
            return True
        return isinstance(call.func, cst.Attribute) and call.func.attr.value in LOG_METHODS

    # -- fixes -------------------------------------------------------------------------------------
    def _fix(self, call: cst.Call, statement, kind: str):
        message = "Remove the anomaly-detection switch"
        if kind == "trainer":
            args = list(call.args)
            index = next(i for i, a in enumerate(args) if a.keyword is not None
                         and a.keyword.value == "detect_anomaly")
            if index == len(args) - 1 and index > 0:
                args[index - 1] = args[index - 1].with_changes(comma=args[index].comma)
            del args[index]
            return self.replace(call, call.with_changes(args=args), message=message)
        if isinstance(statement, cst.With):
            return self._unwrap(statement, call, message)
        if isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1 \
                and isinstance(statement.body[0], cst.Expr) and statement.body[0].value is call:
            return self._remove(statement, message)
        return None

    def _remove(self, statement: cst.SimpleStatementLine, message: str):
        """Remove `statement`, moving the blank lines and comments above it onto the next statement (or
        leaving `pass` where it was the last one)."""
        siblings = _block_of(self.ctx.module, statement)
        if siblings is None:
            return None
        index = next(i for i, s in enumerate(siblings) if s is statement)
        lines = list(statement.leading_lines)
        if index + 1 < len(siblings):
            following = siblings[index + 1]
            return self.rewrite({statement: cst.RemovalSentinel.REMOVE,
                                 following: following.with_changes(
                                     leading_lines=[*lines, *following.leading_lines])}, message=message)
        if index > 0 and all(line.comment is None for line in lines):
            return self.rewrite({statement: cst.RemovalSentinel.REMOVE}, message=message)
        return self.rewrite({statement: cst.SimpleStatementLine([cst.Pass()], leading_lines=lines)},
                            message=message)

    def _unwrap(self, statement: cst.With, call: cst.Call, message: str):
        items = [item for item in statement.items if item.item is not call]
        if len(items) == len(statement.items) or any(item.item is call and item.asname is not None
                                                     for item in statement.items):
            return None
        if items:
            last = items[-1]
            items[-1] = last.with_changes(comma=cst.MaybeSentinel.DEFAULT)
            return self.rewrite({statement: statement.with_changes(items=items)}, message=message)
        body = statement.body
        if not isinstance(body, cst.IndentedBlock) or not body.body:
            return None
        first = body.body[0]
        header = [cst.EmptyLine(comment=body.header.comment)] if body.header.comment is not None else []
        statements = [first.with_changes(leading_lines=[*statement.leading_lines, *header,
                                                        *first.leading_lines]), *body.body[1:]]
        return self.rewrite({statement: cst.FlattenSentinel(statements)}, message=message)


def _block_of(module: cst.Module, statement: cst.CSTNode) -> Optional[list]:
    """The statements of the block (module or indented block) that holds `statement`."""
    stack: list = [module]
    while stack:
        node = stack.pop()
        if isinstance(node, (cst.Module, cst.IndentedBlock)):
            if any(s is statement for s in node.body):
                return list(node.body)
        stack.extend(children(node))
    return None


def _always(test: cst.BaseExpression) -> bool:
    """A test that is true on every run of the code: `True`, a non-zero number, `__name__ == "__main__"`."""
    if is_name(test, "True"):
        return True
    if isinstance(test, (cst.Integer, cst.Float)):
        return float(test.evaluated_value) != 0
    if isinstance(test, cst.Comparison) and is_name(test.left, "__name__") and len(test.comparisons) == 1:
        target = test.comparisons[0]
        return isinstance(target.operator, cst.Equal) and isinstance(target.comparator, cst.SimpleString) \
            and target.comparator.evaluated_value == "__main__"
    return False
