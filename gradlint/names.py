"""Cheap import resolution: map the names a module binds with `import` to dotted qualified names.

The peers pay for LibCST's ScopeProvider/QualifiedNameProvider on every file (5x the parse). A rule here
only needs "is this expression torch.optim.Adam?", which the module's own import statements answer.
Shadowing by assignment is not tracked; that is the precision we trade for speed, and it is rare in
training code.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

# Names that snippets and notebooks use without importing them. They resolve only when the module
# binds nothing under that name and has no star import that could.
CONVENTIONS = {
    "torch": "torch",
    "nn": "torch.nn",
    "F": "torch.nn.functional",
    "optim": "torch.optim",
    "np": "numpy",
}


def dotted(expr: cst.BaseExpression) -> Optional[str]:
    """`a.b.c` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(expr, cst.Attribute):
        parts.append(expr.attr.value)
        expr = expr.value
    if not isinstance(expr, cst.Name):
        return None
    parts.append(expr.value)
    return ".".join(reversed(parts))


class ImportTable:
    def __init__(self) -> None:
        self.bindings: dict[str, str] = {}
        self.star_modules: list[str] = []

    @classmethod
    def from_module(cls, module: cst.Module) -> ImportTable:
        table = cls()
        stack = list(module.body)
        while stack:  # top-level statements, and those nested in if/try/with at module level
            stmt = stack.pop()
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, (cst.Import, cst.ImportFrom)):
                        table.add(small)
            elif isinstance(stmt, (cst.If, cst.Try, cst.TryStar, cst.With, cst.Else, cst.ExceptHandler,
                                   cst.ExceptStarHandler, cst.Finally)):
                body = stmt.body
                if isinstance(body, cst.IndentedBlock):
                    stack.extend(body.body)
                for extra in ("orelse", "handlers", "finalbody"):
                    value = getattr(stmt, extra, None)
                    if isinstance(value, (tuple, list)):
                        stack.extend(value)
                    elif value is not None:
                        stack.append(value)
        return table

    def add(self, node) -> None:
        if isinstance(node, cst.Import):
            for alias in node.names:
                full = dotted(alias.name)
                if full is None:
                    continue
                if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                    self.bindings[alias.asname.name.value] = full
                else:
                    # `import torch.optim` binds `torch`.
                    top = full.split(".", 1)[0]
                    self.bindings.setdefault(top, top)
        elif isinstance(node, cst.ImportFrom):
            if node.relative or node.module is None:
                base = None
            else:
                base = dotted(node.module)
            if isinstance(node.names, cst.ImportStar):
                if base:
                    self.star_modules.append(base)
                return
            for alias in node.names:
                name = alias.name.value if isinstance(alias.name, cst.Name) else None
                if name is None:
                    continue
                local = alias.asname.name.value if alias.asname is not None and isinstance(
                    alias.asname.name, cst.Name) else name
                # A relative import binds a name we cannot qualify; record it so that it shadows conventions.
                self.bindings[local] = f"{base}.{name}" if base else f".{name}"

    def resolve(self, expr: cst.BaseExpression) -> Optional[str]:
        """Qualified name of a Name/Attribute chain whose root is bound by an import, else None.

        `optim.Adam` with `from torch import optim` -> `torch.optim.Adam`; `x.norm` with `x` a local -> None.
        """
        path = dotted(expr)
        if path is None:
            return None
        root, _, rest = path.partition(".")
        target = self.bindings.get(root)
        if target is None:
            target = self._unbound(root)
            if target is None:
                return None
        return f"{target}.{rest}" if rest else target

    def _unbound(self, root: str) -> Optional[str]:
        if self.star_modules:
            torchy = [m for m in self.star_modules if m == "torch" or m.startswith("torch.")]
            if len(torchy) == len(self.star_modules) == 1:
                return f"{torchy[0]}.{root}"
            return None
        return CONVENTIONS.get(root)

    def local_name_for(self, qualified: str) -> Optional[str]:
        """An expression string reaching `qualified` through an existing binding, preferring the shortest.

        `torch.nn.functional.normalize` -> `F.normalize` if `F` is bound to torch.nn.functional, else
        `nn.functional.normalize` if `nn` is torch.nn, else `torch.nn.functional.normalize` if `torch` is
        bound, else None.
        """
        best = None
        for local, target in self.bindings.items():
            if qualified == target:
                candidate = local
            elif qualified.startswith(target + "."):
                candidate = local + qualified[len(target):]
            else:
                continue
            if best is None or len(candidate) < len(best):
                best = candidate
        return best

    def is_bound(self, name: str) -> bool:
        return name in self.bindings
