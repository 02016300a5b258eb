"""What the whole file declares, read cheaply: the classes of the module, their bases and their methods.

When the engine parsed only the regions of a file that can hold a finding, a rule can still ask "is the
class of this method an nn.Module?" or "is `self.helper` a method of this class?" from the `ast` tree of
the whole file (`ctx.outline`, a tenth of LibCST's cost), before it asks for the full module. Answers are
None when the outline cannot tell; then the rule asks for the full module and the facts.
"""

from __future__ import annotations

import ast
from typing import Optional

import libcst as cst

from ..astflow import dotted_name
from . import apis


class Outline:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        tree = getattr(ctx, "outline", None)
        self.classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)} if tree is not None else None

    def _resolve(self, dotted: str) -> Optional[str]:
        try:
            return self.ctx.resolve(cst.parse_expression(dotted))
        except Exception:
            return None

    def is_module_class(self, name: str, depth: int = 0) -> Optional[bool]:
        """True when the class derives from nn.Module (through classes of this file) or defines `forward`
        over a base we cannot see; False for a class with only known non-module bases; None: unknown."""
        if self.classes is None or depth > 8:
            return None
        node = self.classes.get(name)
        if node is None:
            return None
        unknown = False
        for base in node.bases:
            dotted = dotted_name(base)
            if dotted is None:
                unknown = True
                continue
            if dotted in self.classes and not self.ctx.names.is_import_bound(dotted):
                inner = self.is_module_class(dotted, depth + 1)
                if inner:
                    return True
                unknown |= inner is None
                continue
            qualified = self._resolve(dotted)
            if qualified and apis.MODULE_BASES.match(qualified):
                return True
            if dotted not in ("object", "ABC", "abc.ABC", "Generic", "Protocol"):
                unknown = True
        if unknown:
            if any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == "forward" for s in node.body):
                return True
            return None
        return False

    def methods(self, name: str, depth: int = 0) -> Optional[set]:
        """The methods a class of this file defines, with those of its bases of this file (None: unknown)."""
        if self.classes is None or depth > 8:
            return None
        node = self.classes.get(name)
        if node is None:
            return None
        found = {s.name for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for base in node.bases:
            dotted = dotted_name(base)
            if dotted in self.classes:
                found |= self.methods(dotted, depth + 1) or set()
        return found
