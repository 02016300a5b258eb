from __future__ import annotations

import libcst as cst

from gradlint.nodes import is_name, number
from gradlint.rule import Invalid, Option, Valid
from gradlint.scopes import LocalsRule

ADAM = {"torch.optim.Adam", "torch.optim.adam.Adam"}
PARTIAL = {"functools.partial"}
WEIGHT_DECAY_POSITION = 4  # Adam(params, lr, betas, eps, weight_decay, amsgrad)


class AdamWeightDecay(LocalsRule):
    """
    ## What it does
    Finds `torch.optim.Adam` created with a non-zero `weight_decay`, given as a keyword or as the fifth
    positional argument (`Adam(params, lr, betas, eps, weight_decay)`), unless `decoupled_weight_decay=True`
    is passed too. The name is resolved through the module's imports: `torch.optim.Adam`, `optim.Adam`,
    `from torch.optim import Adam` and `from torch import optim as topt; topt.Adam` are Adam;
    `tf.keras.optimizers.Adam` and `keras.optimizers.Adam` are not. A local name is followed to its value
    (`wd = 0.0` then `weight_decay=wd` is not reported). The same decay given in a param group
    (`Adam([{"params": p, "weight_decay": 0.01}])`, also `dict(params=p, weight_decay=wd)` and a list
    bound to a local name) or bound in advance with `functools.partial(Adam, weight_decay=...)` is
    coupled L2 too.

    ## Why is this bad?
    `Adam`'s `weight_decay` is an L2 penalty: it is added to the gradient, and the gradient is then divided
    by the running root-mean-square of past gradients. Weights with large or noisy gradients are thus
    decayed much less than the value says, and weights with tiny gradients much more; the decay no longer
    acts as regularisation in the way it does with SGD (Loshchilov & Hutter, *Decoupled Weight Decay
    Regularization*, 2019). `AdamW` shrinks every weight by `lr * weight_decay` each step, independently of
    its gradient history.

    ## Example
    ```python
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    ```

    ## Use instead
    ```python
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    ```
    and retune `weight_decay`: AdamW's decay per step is `lr * weight_decay`, so a value chosen for Adam's
    L2 penalty (often 1e-4 to 5e-4) is usually far too weak for AdamW (typical values are 1e-2 to 1e-1).
    `Adam(..., decoupled_weight_decay=True)` (PyTorch 2.7+) is the same optimiser as AdamW and is not
    reported.

    The fix keeps every argument and param group (AdamW takes the same positional and keyword arguments
    and group keys, except `decoupled_weight_decay`, which the fix drops when it is `False`); in a
    `functools.partial` it replaces the class passed. It reuses the module's spelling
    (`optim.Adam` becomes `optim.AdamW`, `torch.optim.Adam` becomes `torch.optim.AdamW`); for a bare
    `Adam` it reuses an imported `AdamW` or adds `from torch.optim import AdamW` beside the Adam import.

    A `weight_decay` that is not a literal (`weight_decay=args.wd`) is reported too, with a message that
    says so: passing a weight decay to Adam is almost always meant to regularise, and when the value is 0
    at run time the rewrite changes nothing (AdamW with `weight_decay=0` runs exactly Adam's update).
    Set `report-non-literal = false` to report only literal values. Not reported, because the call cannot
    be proved to use a non-zero coupled decay: a `**kwargs` splat (it may carry `weight_decay` or
    `decoupled_weight_decay=True`), `decoupled_weight_decay=<expression>`, a negative literal (Adam
    raises on it), and a value the program itself calls an L2 penalty (`weight_decay=args.l2`,
    `weight_decay=cfg.l2_reg`: a paper's "L2 regularisation with Adam", which is what it asks for).

    Scope: only `torch.optim.Adam`. `NAdam` and `RAdam` have the same coupled default
    but their fix is a flag (`decoupled_weight_decay=True`), not a class, and their published recipes use
    the coupled form on purpose; `Adamax` has no decoupled variant to rewrite to; `SparseAdam` has no
    weight decay; subclasses of Adam are user classes whose constructor the rule cannot see. Each would be
    its own decision, not a silent extension of this one.

    ## Fix safety
    Unsafe. The rewrite changes the optimisation for the same `weight_decay` value: the decay is no longer
    rescaled by Adam's second-moment estimate and is multiplied by the learning rate, so with `lr=1e-3` a
    value of `1e-4` shrinks weights by a factor of 1e-7 per step — almost no regularisation. A model
    trained before and after the fix converges differently, and the value needs retuning, which a tool
    cannot do. Like ruff, gradlint marks fixes that change run-time behaviour unsafe: `fix --write` leaves
    the call alone, and `fix --write --unsafe-fixes` rewrites it to AdamW (the intended migration), with a
    message that asks to retune the value.

    ## Options
    - `report-non-literal` (default `true`): also report a `weight_decay` given as an expression (a name,
      an attribute, a call), which may be 0 at run time.
    """

    code = "GL003"
    reports_in_tests = False
    name = "adam-weight-decay"
    summary = "torch.optim.Adam with a non-zero weight_decay (coupled L2): use AdamW"
    triggers = (r"Adam\b",)
    options = (Option("report-non-literal", True,
                      "Also report weight_decay given as an expression (it may be 0 at run time)."),)

    VALID = [
        Valid("import torch\n"
              "optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)\n"),
        Valid("import torch\n\n\ndef configure_optimizers(self):\n"
              "    return torch.optim.Adam(self.parameters(), lr=self.learning_rate)\n",
              note="lightning's BoringModel: no weight decay"),
        Valid("import torch\noptimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=0)\n"),
        Valid("from torch import optim\noptimizer = optim.Adam(params, lr=1e-3, weight_decay=0.0)\n"),
        Valid("import torch\noptimizer = torch.optim.Adam(params, 1e-3, (0.9, 0.999), 1e-8, 0.0, True)\n",
              note="positional weight_decay of 0, amsgrad on"),
        Valid("import torch\noptimizer = torch.optim.Adam(params, 1e-3, (0.9, 0.999), 1e-8)\n"),
        Valid("import torch\noptimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-2, "
              "decoupled_weight_decay=True)\n", note="AdamW under another name (PyTorch 2.7+)"),
        Valid("import torch\n\n\ndef build(params):\n    wd = 0.0\n"
              "    return torch.optim.Adam(params, lr=1e-3, weight_decay=wd)\n",
              note="a local name bound to 0"),
        Valid("import torch\noptimizer = torch.optim.Adam(params, lr=args.lr, **cfg.optimizer_kwargs)\n",
              note="a ** splat: weight_decay is not provable"),
        Valid("import tensorflow as tf\n"
              "optimizer = tf.keras.optimizers.Adam(learning_rate=1e-3, weight_decay=1e-4)\n",
              note="Keras, not torch (and Keras's weight_decay is decoupled)"),
        Valid("from keras.optimizers import Adam\noptimizer = Adam(learning_rate=1e-3, weight_decay=1e-4)\n"),
        Valid("from .optim import Adam\noptimizer = Adam(params, weight_decay=1e-4)\n",
              note="a project's own Adam"),
        Valid("import torch\noptimizer = torch.optim.Adamax(params, lr=2e-3, weight_decay=1e-4)\n",
              note="Adamax is out of scope (no decoupled variant)"),
        Valid("import torch\noptimizer = torch.optim.NAdam(params, lr=2e-3, weight_decay=1e-4)\n",
              note="NAdam/RAdam are out of scope (see docs)"),
        Valid("import torch\n\n"
              "registry = dict(opt_class=torch.optim.Adam, defaults={'weight_decay': 1e-4})\n",
              note="timm's optimizer registry: a reference, not a call"),
        Valid("import torch\noptimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=-1e-4)\n",
              note="Adam raises on a negative value"),
        Valid("import torch\noptimizer = torch.optim.Adam([{'params': decay, 'weight_decay': 0.0}, "
              "{'params': no_decay}], lr=1e-3)\n", note="param groups without a decay"),
        Valid("import functools\nimport torch\nmake = functools.partial(torch.optim.Adam, lr=1e-3)\n"),
        Valid("from functools import partial\nimport torch\n"
              "make = partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05)\n"),
        Valid("import argparse\nfrom torch.optim import Adam\n\n\ndef main(model):\n"
              "    parser = argparse.ArgumentParser()\n"
              "    parser.add_argument('--l2', type=float, default=5e-4, help='weight decay')\n"
              "    args = parser.parse_args()\n"
              "    return Adam(model.parameters(), lr=0.005, weight_decay=args.l2)\n",
              note="pytorch/examples' GAT: the paper's L2 penalty with Adam, asked for by name"),
    ]
    VALID += [
        Valid("import pytest\nimport torch\nfrom lightning.pytorch import LightningModule, Trainer\n\n\n"
              "def test_monitor_logs_weight_decay(tmp_path):\n    class Model(LightningModule):\n"
              "        def configure_optimizers(self):\n"
              "            return torch.optim.Adam(self.parameters(), lr=0.1, weight_decay=0.1)\n\n"
              "    Trainer(default_root_dir=tmp_path, fast_dev_run=True).fit(Model())\n",
              note="inside a pytest test the optimizer is the test's fixture (Lightning's LR-monitor tests)"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef test_run(model):\n"
            "    return torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1)\n",
            "import torch\n\n\ndef test_run(model):\n"
            "    return torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)\n",
            unsafe=True, note="named test_, but nothing collects it: no pytest import"),
        Invalid(
            "import torch\noptimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)\n",
            "import torch\noptimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)\n",
            unsafe=True),
        Invalid(
            "from torch.optim import Adam\n\n\ndef make(model, lr, weight_decay):\n"
            "    return Adam(model.parameters(), lr=lr, weight_decay=weight_decay)\n",
            "from torch.optim import Adam\nfrom torch.optim import AdamW\n\n\n"
            "def make(model, lr, weight_decay):\n"
            "    return AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)\n",
            unsafe=True, note="the seeds' Adam-to-AdamW change; a parameter may be 0, reported anyway"),
        Invalid(
            "from torch.optim import Adam, AdamW\nopt = Adam(net.parameters(), lr=3e-4, weight_decay=5e-4)\n",
            "from torch.optim import Adam, AdamW\n"
            "opt = AdamW(net.parameters(), lr=3e-4, weight_decay=5e-4)\n",
            unsafe=True, note="reuses the imported AdamW"),
        Invalid(
            "from torch import optim as topt\nopt = topt.Adam(net.parameters(), weight_decay=1e-5)\n",
            "from torch import optim as topt\nopt = topt.AdamW(net.parameters(), weight_decay=1e-5)\n",
            unsafe=True),
        Invalid(
            "from torch import optim\nopt = optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)\n",
            "from torch import optim\nopt = optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)\n",
            unsafe=True),
        Invalid(
            "import torch\nopt = torch.optim.Adam(params, 1e-3, (0.9, 0.999), 1e-8, 1e-4)\n",
            "import torch\nopt = torch.optim.AdamW(params, 1e-3, (0.9, 0.999), 1e-8, 1e-4)\n",
            unsafe=True, note="weight_decay as the fifth positional argument"),
        Invalid(
            "import torch\n\n\ndef build(model, args):\n"
            "    return torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.wd)\n",
            "import torch\n\n\ndef build(model, args):\n"
            "    return torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)\n",
            unsafe=True, note="not a literal: reported with a message that says it may be 0"),
        Invalid(
            "import torch\n"
            "opt = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=False)\n",
            "import torch\nopt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)\n",
            unsafe=True, note="AdamW takes no decoupled_weight_decay"),
        Invalid(
            "import torch\n\n\ndef build(params):\n    wd = 1e-4\n"
            "    return torch.optim.Adam(params, lr=1e-3, weight_decay=wd)\n",
            "import torch\n\n\ndef build(params):\n    wd = 1e-4\n"
            "    return torch.optim.AdamW(params, lr=1e-3, weight_decay=wd)\n",
            unsafe=True, note="a local name bound to a literal"),
        Invalid(
            "import torch\noptimizer = torch.optim.Adam(\n    model.parameters(),\n    lr=1e-3,\n"
            "    weight_decay=1e-4,  # L2\n    amsgrad=True,\n)\n",
            "import torch\noptimizer = torch.optim.AdamW(\n    model.parameters(),\n    lr=1e-3,\n"
            "    weight_decay=1e-4,  # L2\n    amsgrad=True,\n)\n",
            unsafe=True, note="layout and comments are kept"),
        Invalid(
            "from torch.optim.adam import Adam as TorchAdam\nopt = TorchAdam(params, weight_decay=1e-4)\n",
            "from torch.optim.adam import Adam as TorchAdam\nimport torch\n"
            "opt = torch.optim.AdamW(params, weight_decay=1e-4)\n",
            unsafe=True, note="an alias from the submodule: AdamW is reached through torch.optim"),
        Invalid(
            "import torch\nopt = torch.optim.Adam(\n    params,\n    weight_decay=1e-4,\n"
            "    decoupled_weight_decay=False\n)\n",
            "import torch\nopt = torch.optim.AdamW(\n    params,\n    weight_decay=1e-4\n)\n",
            unsafe=True, note="dropping the last argument keeps the layout"),
        Invalid(
            "import torch\nopt = torch.optim.Adam([{'params': model.parameters(), 'weight_decay': 0.01}], lr=1e-3)\n",
            "import torch\nopt = torch.optim.AdamW([{'params': model.parameters(), 'weight_decay': 0.01}], lr=1e-3)\n",
            unsafe=True, note="a param group's weight_decay is coupled L2 too"),
        Invalid(
            "import torch\n\n\ndef build(model, wd):\n"
            "    groups = [dict(params=model.encoder.parameters(), weight_decay=wd),\n"
            "              dict(params=model.head.parameters(), weight_decay=0.0)]\n"
            "    return torch.optim.Adam(groups, lr=1e-4)\n",
            "import torch\n\n\ndef build(model, wd):\n"
            "    groups = [dict(params=model.encoder.parameters(), weight_decay=wd),\n"
            "              dict(params=model.head.parameters(), weight_decay=0.0)]\n"
            "    return torch.optim.AdamW(groups, lr=1e-4)\n",
            unsafe=True, note="groups bound to a local name"),
        Invalid(
            "import functools\nimport torch\n"
            "make_optimizer = functools.partial(torch.optim.Adam, lr=1e-3, weight_decay=1e-4)\n",
            "import functools\nimport torch\n"
            "make_optimizer = functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4)\n",
            unsafe=True, note="functools.partial binds Adam's arguments in advance"),
        Invalid(
            "from functools import partial\nfrom torch.optim import Adam\n"
            "make_optimizer = partial(Adam, weight_decay=5e-4)\n",
            "from functools import partial\nfrom torch.optim import Adam\nfrom torch.optim import AdamW\n"
            "make_optimizer = partial(AdamW, weight_decay=5e-4)\n",
            unsafe=True),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        qualified = self.ctx.resolve(node.func)
        if qualified in ADAM:
            self._check(node, node, node.func, list(node.args))
        elif qualified in PARTIAL and node.args and not node.args[0].star and node.args[0].keyword is None \
                and self.ctx.resolve(node.args[0].value) in ADAM:
            # `functools.partial(Adam, weight_decay=...)`: the arguments after Adam are Adam's.
            self._check(node, node, node.args[0].value, list(node.args[1:]))

    def _check(self, site: cst.Call, call: cst.Call, adam: cst.BaseExpression, args: list) -> None:
        """`args` are the arguments Adam receives (after `params` when they come positionally)."""
        if any(a.star == "**" for a in args):
            return  # the splat may hold weight_decay or decoupled_weight_decay=True
        decoupled = _argument(args, None, "decoupled_weight_decay")
        if decoupled is not None and not is_name(decoupled.value, "False"):
            return  # True, or an expression that may be True
        default = _argument(args, WEIGHT_DECAY_POSITION, "weight_decay")
        params = _argument(args, 0, "params")
        decays = [("", default.value)] if default is not None else []
        groups = self._groups(params.value) if params is not None else None
        if groups:
            for group in groups:
                value = _group_value(group, "weight_decay")
                if _group_value(group, "decoupled_weight_decay") is not None:
                    continue  # a group of its own kind: not provable
                if value is not None:
                    decays.append(("param group ", value))
        reported = None
        for where, value in decays:
            if _named_l2(value):
                continue  # the program calls it an L2 penalty: coupled L2 is what it asks for
            literal = self._literal(value)
            if literal is not None and literal <= 0:
                continue
            if literal is None and not self.option("report-non-literal"):
                continue
            if reported is None or (literal is not None and reported[2] is None):
                reported = (where, value, literal)
        if reported is None:
            return
        where, value, literal = reported
        shown = _short(self.code_of(value))
        if literal is not None:
            message = (f"`Adam({where}weight_decay={shown})` is an L2 penalty that Adam's adaptive step rescales; "
                       "use `AdamW` (decoupled decay). AdamW's decay is scaled by lr, so the value may need "
                       "retuning")
        else:
            message = (f"`Adam({where}weight_decay={shown})`: if non-zero, an L2 penalty that Adam's adaptive "
                       "step rescales; use `AdamW` (the same update when it is 0). AdamW's decay is scaled by lr, "
                       "so the value may need retuning")
        self.report(site, message, fix=self._fix(call, adam, decoupled))

    def _groups(self, params: cst.BaseExpression, depth: int = 0) -> list:
        """The param-group dicts of a `params` argument written as a list of dicts (or a local name bound
        to one); [] when it is not one."""
        if isinstance(params, cst.Name) and depth < 4:
            value = self.value_of(params.value)
            return self._groups(value, depth + 1) if value is not None else []
        if not isinstance(params, (cst.List, cst.Tuple)):
            return []
        groups = [e.value for e in params.elements if isinstance(e, cst.Element)]
        return [g for g in groups if isinstance(g, cst.Dict) or (
            isinstance(g, cst.Call) and is_name(g.func, "dict"))]

    def _literal(self, expr: cst.BaseExpression, depth: int = 0) -> float | None:
        """The number `expr` holds, following local names to literals; None when not provable."""
        value = number(expr)
        if value is not None or depth > 4 or not isinstance(expr, cst.Name):
            return value
        bound = self.value_of(expr.value)
        return self._literal(bound, depth + 1) if bound is not None else None

    def _fix(self, call: cst.Call, adam: cst.BaseExpression, decoupled: cst.Arg | None):
        references = ()
        if isinstance(adam, cst.Attribute) and self.ctx.resolve(adam) == "torch.optim.Adam":
            new_adam = adam.with_changes(attr=cst.Name("AdamW"))  # optim.Adam -> optim.AdamW
        else:
            ref = self.reference("torch.optim.AdamW")
            new_adam, references = ref.expr.with_changes(lpar=adam.lpar, rpar=adam.rpar), (ref,)
        args = list(call.args)
        if decoupled is not None:  # AdamW does not accept decoupled_weight_decay
            index = next(i for i, a in enumerate(args) if a is decoupled)
            if index == len(args) - 1 and index > 0:
                args[index - 1] = args[index - 1].with_changes(
                    comma=decoupled.comma, whitespace_after_arg=decoupled.whitespace_after_arg)
            del args[index]
        if adam is call.func:
            new_call = call.with_changes(func=new_adam, args=args)
        else:  # functools.partial(Adam, ...)
            args[0] = args[0].with_changes(value=new_adam)
            new_call = call.with_changes(args=args)
        shown = _code(new_adam)
        return self.replace(call, new_call, safe=False, references=references,
                            message=f"Use `{shown}` (retune weight_decay: AdamW's decay is scaled by lr)")


def _named_l2(value: cst.BaseExpression) -> bool:
    """`args.l2`, `l2_penalty`, `cfg.l2_reg`: a name whose own words say L2."""
    name = value.attr.value if isinstance(value, cst.Attribute) else value.value if isinstance(value, cst.Name) else ""
    return "l2" in name.lower().split("_")


def _argument(args: list, position: int | None, keyword: str) -> cst.Arg | None:
    """The argument passed as `keyword`, or at `position` among the positional ones (None after `*args`)."""
    for a in args:
        if a.keyword is not None and a.keyword.value == keyword:
            return a
    if position is None:
        return None
    plain = []
    for a in args:
        if a.star == "*":
            return None
        if a.keyword is None:
            plain.append(a)
    return plain[position] if position < len(plain) else None


def _group_value(group: cst.BaseExpression, key: str) -> cst.BaseExpression | None:
    """`group[key]` of a `{"params": ..., key: v}` or `dict(params=..., key=v)` literal, or None."""
    if isinstance(group, cst.Dict):
        for element in group.elements:
            if isinstance(element, cst.DictElement) and isinstance(element.key, cst.SimpleString) and \
                    element.key.evaluated_value == key:
                return element.value
        return None
    for a in group.args:
        if a.keyword is not None and a.keyword.value == key:
            return a.value
    return None


def _code(expr: cst.BaseExpression) -> str:
    return cst.Module(body=[]).code_for_node(expr)


def _short(code: str, limit: int = 40) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[: limit - 3] + "..."
