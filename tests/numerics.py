"""Run a snippet and its fixed version under torch on the same inputs, to check what a safe fix promises.

A *safe* fix changes results only where the original was already broken. `compare(original, fixed)`
runs both on ordinary inputs (float64 normals at tiny, unit and large scales, and scaled by a negative
factor) and reports where the results or their gradients differ; `degenerate(fixed)` runs the fixed one
on inputs that break the original (all zeros; a batch whose first row is zero) and reports any value or
gradient that is not finite.

A snippet is module code as in a rule's examples: names it reads without binding them (`x`, `a`, `b`)
get input tensors, and each function it defines is called with one tensor per parameter. Its results
are the tensors it binds at module level and what its functions return. Inputs are (4, 8) matrices:
rows are samples, so `dim=-1` and `dim=1` normalise per sample and `dim=0` per feature.

    from numerics import compare, degenerate
    assert compare(example.code, example.expected) == []
    assert degenerate(example.expected) == []

Tests that use it skip without torch (`pytest.importorskip("torch")`).
"""

from __future__ import annotations

import ast
import builtins
from typing import Callable, Optional

import torch

SHAPE = (4, 8)
SCALES = (1e-4, 1.0, 1e3, -2.0)  # tiny, unit and large magnitudes, and a negative factor
_BUILTINS = set(dir(builtins))


def free_names(code: str) -> list[str]:
    """Names the module reads but neither imports nor defines (bound ones get overwritten anyway)."""
    tree = ast.parse(code)
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            defined.add(node.name)
    loaded = [n.id for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef))
              for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    return sorted(set(loaded) - defined - _BUILTINS)


def functions(code: str) -> list[tuple[str, list[str]]]:
    """(name, parameter names) of each module-level function."""
    tree = ast.parse(code)
    return [(n.name, [a.arg for a in n.args.args]) for n in tree.body if isinstance(n, ast.FunctionDef)]


def run(code: str, inputs: dict) -> dict:
    """Exec `code` with `inputs` for its free names; call its functions with inputs for their parameters.
    Returns {name: tensor} for the tensors it leaves at module level and {function: result}."""
    namespace = {"__name__": "snippet", **{k: v.clone() for k, v in inputs.items()}}
    exec(compile(code, "snippet.py", "exec"), namespace)
    results = {k: v for k, v in namespace.items() if isinstance(v, torch.Tensor) and k not in inputs}
    for name, params in functions(code):
        if all(p in inputs for p in params):
            out = namespace[name](*(inputs[p].clone() for p in params))
            for index, value in enumerate(out if isinstance(out, tuple) else (out,)):
                if isinstance(value, torch.Tensor):
                    results[f"{name}()[{index}]"] = value
    # A snippet that rebinds an input (`x = x / n`, `x /= n`) leaves its result under the input's name.
    for k in inputs:
        if isinstance(namespace.get(k), torch.Tensor) and namespace[k] is not inputs[k]:
            results[k] = namespace[k]
    return results


def _inputs(code: str, make: Callable[[str], torch.Tensor]) -> dict:
    names = set(free_names(code))
    for _, params in functions(code):
        names.update(params)
    return {name: make(name) for name in sorted(names)}


def _with_gradients(code: str, leaves: dict) -> tuple[dict, dict]:
    """Results, and the gradient of a fixed random weighting of them with respect to each input."""
    results = run(code, leaves)
    tensors = [v for v in results.values() if v.is_floating_point() and v.requires_grad]
    if not tensors:
        return results, {}
    generator = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=generator, dtype=t.dtype)).sum() for t in tensors)
    wrt = [v for v in leaves.values() if v.requires_grad]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return results, {k: g for k, g in zip([k for k, v in leaves.items() if v.requires_grad], grads)
                     if g is not None}


def ordinary_inputs(code: str, scale: float, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return _inputs(code, lambda name: (torch.randn(SHAPE, generator=generator, dtype=torch.float64) * scale)
                   .requires_grad_())


def differentiable(code: str) -> bool:
    """Whether autograd can differentiate the snippet (`x /= x.norm()` modifies what backward needs)."""
    try:
        _with_gradients(code, ordinary_inputs(code, 1.0))
    except RuntimeError:
        return False
    return True


def compare(original: str, fixed: str, rtol: float = 1e-9) -> list[str]:
    """Differences between `original` and `fixed` on ordinary inputs: results, and gradients where
    autograd can differentiate the original."""
    problems = []
    with_gradients = differentiable(original)
    for scale in SCALES:
        if with_gradients:
            before, grad_before = _with_gradients(original, ordinary_inputs(original, scale))
            after, grad_after = _with_gradients(fixed, ordinary_inputs(original, scale))
        else:
            with torch.no_grad():
                before, grad_before = run(original, ordinary_inputs(original, scale)), {}
                after, grad_after = run(fixed, ordinary_inputs(original, scale)), {}
        if not before:
            problems.append(f"scale {scale}: the snippet produced no tensor")
        for what, left, right in (("result", before, after), ("gradient", grad_before, grad_after)):
            for key in sorted(set(left) | set(right)):
                a, b = left.get(key), right.get(key)
                if a is None or b is None:
                    problems.append(f"scale {scale}: {what} {key} only on one side")
                elif not torch.allclose(a.detach(), b.detach(), rtol=rtol, atol=0.0):
                    worst = ((a - b).abs() / b.abs().clamp_min(1e-300)).max().item()
                    problems.append(f"scale {scale}: {what} {key} differs (relative {worst:.3g})")
    return problems


def degenerate_inputs(code: str, kind: str, dtype=torch.float64) -> dict:
    """"zeros": every input all zero; "zero row": ordinary inputs whose first row is zero."""
    generator = torch.Generator().manual_seed(2)

    def make(name: str) -> torch.Tensor:
        value = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
        if kind == "zeros":
            value.zero_()
        else:
            value[0] = 0
        return value.to(dtype).requires_grad_(dtype.is_floating_point and dtype != torch.float16)

    return _inputs(code, make)


def degenerate(code: str, dtype=torch.float64, gradients: bool = True,
               kinds: tuple = ("zeros", "zero row")) -> list[str]:
    """What is not finite when `code` runs on inputs that make a norm (or std) 0 (gradients only where
    autograd can differentiate it)."""
    problems = []
    gradients = gradients and differentiable(code)
    for kind in kinds:
        inputs = degenerate_inputs(code, kind, dtype)
        if gradients:
            results, grads = _with_gradients(code, inputs)
        else:
            with torch.no_grad():
                results, grads = run(code, inputs), {}
        for what, values in (("result", results), ("gradient", grads)):
            for key, value in values.items():
                if value.is_floating_point() and not torch.isfinite(value).all():
                    problems.append(f"{kind}: {what} {key} is not finite")
    return problems


def breaks(code: str) -> Optional[str]:
    """Where the original goes non-finite on degenerate inputs (what the fix is for), or None."""
    problems = degenerate(code)
    return problems[0] if problems else None
