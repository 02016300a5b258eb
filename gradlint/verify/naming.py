"""Names as the user knows them: qualified module names without wrapper prefixes, and the variable a
top-level module is bound to where it is called."""

from __future__ import annotations

from torch import nn

from .sites import user_frame


def clean(name: str) -> str:
    """Qualified names as the user wrote the model: without torch.compile's and DDP's wrapper prefixes."""
    parts = [p for p in name.split(".") if p not in ("_orig_mod",)]
    if parts and parts[0] == "module":  # DDP's `module`: the model it wraps, named as the model
        parts = parts[1:]
    return ".".join(parts)


def contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def variable_name(module) -> str:
    """The name the module is bound to where user code calls it (`model`, `self.model`), else its class name."""
    frame = user_frame()
    while frame is not None:
        local = frame.f_locals
        for name, value in local.items():
            if value is module and name != "self":
                return name
        owner = local.get("self")
        if isinstance(owner, nn.Module):
            for name, value in owner._modules.items():
                if value is module:
                    return name
        frame = frame.f_back
        if frame is not None and frame.f_code.co_name == "<module>":
            break
    return type(module).__name__
