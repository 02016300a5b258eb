"""Which calls run a module's forward, and whether a loop's data flows into one.

A call runs a forward when what it calls is a module (`model(x)`, `self.net(x)`) or when it calls one of
the methods libraries use for a forward on a module (`model.generate(...)`, `vae.decode(z)`,
`model.encode_image(x)`). Both need the facts to say "module": the name of the object never does.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from . import apis
from .events import ASSIGN, BUILTINS, CALL, SAME_OBJECT_METHODS, Event, Loop, Routine, children, obj_key

# Calls that are never a forward, decided on syntax alone (before asking for the whole file's facts).
_NOT_FORWARD = apis.MODULE_API | SAME_OBJECT_METHODS | {
    "item", "sum", "mean", "argmax", "max", "min", "size", "view", "reshape", "detach", "numpy", "tolist",
    "append", "extend", "format", "join", "keys", "values", "items", "get", "copy", "clone", "unsqueeze",
    "squeeze", "softmax", "log_softmax", "cat", "stack", "float", "long", "int", "contiguous", "permute",
    "transpose", "flatten", "eq", "ne", "topk", "sort", "split", "chunk", "add_", "mul_", "copy_", "fill_",
    "zero_", "clamp_", "clamp", "norm", "pow", "sqrt", "exp", "log", "abs", "all", "any", "info", "debug",
    "warning", "write", "add_scalar", "set_postfix", "gather", "index_select", "masked_fill", "expand",
    "repeat", "new_zeros", "new_ones", "type_as", "data_ptr", "dim", "nelement", "numel", "lower", "strip",
}


def forward_candidates(r: Routine, e: Event) -> list:
    """Keys whose forward this call may run, by syntax: (key, is a method call). Facts decide."""
    if e.kind != CALL or e.extra.get("qualified") is not None:
        return []
    func = e.node.func
    if isinstance(func, cst.Name):
        name = func.value
        if (name in BUILTINS and name not in r.locals and name not in r.params) or name in r.nested \
                or name in r.classes:
            return []
        return [(name, False)]
    if isinstance(func, cst.Attribute):
        out = []
        method = func.attr.value
        if method not in _NOT_FORWARD and not method.endswith("_") and e.key:  # `x.div_(...)`: in place
            out.append((e.key, False))
        receiver = obj_key(func.value)
        if receiver and method in apis.FORWARD_METHODS:
            out.append((receiver, True))
        return out
    return []


def forward_of(facts, r: Routine, e: Event) -> Optional[str]:
    """The key of the module whose forward this call runs, or None."""
    for key, _method in forward_candidates(r, e):
        if facts.is_module(r, key):
            return key
    return None


def names_in(node) -> set:
    out: set = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, cst.Name):
            out.add(n.value)
        elif isinstance(n, cst.Lambda):
            continue
        else:
            stack.extend(children(n))
    return out


def fed_by(r: Routine, loop: Loop, e: Event) -> bool:
    """Does data from `loop`'s targets (directly, or through names assigned from them inside the loop before
    `e`) reach the arguments of the call `e`? `for x, y in loader: model(x.to(device))` does."""
    derived = {t for t in loop.targets if "." not in t}
    if not derived:
        return False
    for a in r.of(ASSIGN):
        if loop.start < a.index < e.index and a.index < loop.end:
            value = a.extra.get("value") or a.extra.get("unpacked")
            if value is not None and names_in(value) & derived:
                derived |= {t for t in a.extra["targets"] if "." not in t}
    used: set = set()
    for arg in e.node.args:
        used |= names_in(arg.value)
    return bool(used & derived)
