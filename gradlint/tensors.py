"""Evidence that an expression is a torch tensor, so that a fix may call a tensor method on it.

`x.norm()` may be a sympy matrix's norm or a user class's; `a.std()` may be NumPy's. A fix that calls
`.clamp_min(...)` on them raises where the original ran, so it needs evidence, read from the code:

- a torch function's result (`torch.linalg.vector_norm(x)`, `F.normalize(...)`, `torch.randn(...)`);
- a call with a signature only tensors have: a `dim=` or `keepdim=` keyword (NumPy says `axis=` and
  `keepdims=`), or a method that NumPy arrays, sympy and Python numbers lack (`unsqueeze`, `detach`,
  `clamp`, `masked_fill`, `softmax`, ...);
- a method of something that is a tensor (other than the few that return Python values: `item`, `size`);
  arithmetic with a tensor; an index of a tensor;
- a local name bound to any of these, a parameter annotated `torch.Tensor`.

No evidence is not evidence of the contrary: a rule may still report, but its fix is then unsafe.
`is_array` reads evidence of the contrary, a NumPy array's or a pandas object's, from the same facts:
a `numpy.*`/`pandas.*`/`scipy.*` function's result, a method only they have (`astype`, `groupby`,
`to_numpy`, a tensor's `.numpy()`), `.loc`/`.iloc`, `.values` of one of these, or a name bound to one.
"""

from __future__ import annotations

from typing import Callable, Optional

import libcst as cst

from .nodes import method_call

# Methods that NumPy arrays, sympy objects and Python numbers do not have.
TENSOR_ONLY_METHODS = frozenset({
    "unsqueeze", "permute", "contiguous", "detach", "clamp", "clamp_min", "clamp_max", "clamp_", "clamp_min_",
    "masked_fill", "masked_fill_", "softmax", "log_softmax", "float", "half", "bfloat16", "cuda", "type_as",
    "view_as", "expand_as", "unflatten", "to", "rsqrt", "square", "sigmoid", "relu", "new_zeros",
    "new_ones", "new_full", "new_empty", "new_tensor", "requires_grad_", "add_", "sub_", "mul_", "div_",
    "addcmul", "addcmul_", "addcdiv", "addcdiv_", "lerp", "lerp_", "bmm", "amax", "amin", "logsumexp",
    "masked_select", "index_select", "scatter_add", "sum_to_size",
})
TENSOR_KEYWORDS = frozenset({"dim", "keepdim"})
# Methods whose result is a NumPy array or a pandas object: tensors have none of them (`numpy()` makes one).
ARRAY_METHODS = frozenset({
    "astype", "numpy", "to_numpy", "groupby", "agg", "aggregate", "rolling", "expanding", "ewm", "resample",
    "fillna", "dropna", "reset_index", "set_index", "corr", "corrwith", "pct_change", "to_frame",
    "value_counts", "pivot_table", "idxmax", "idxmin",
})
ARRAY_ATTRIBUTES = frozenset({"loc", "iloc", "at", "iat"})
# Methods that NumPy, pandas and torch share and whose result is of the receiver's kind.
SHARED_METHODS = frozenset({
    "reshape", "copy", "clip", "transpose", "squeeze", "mean", "sum", "std", "var", "abs", "round", "cumsum",
    "apply", "flatten", "max", "min", "prod", "sqrt", "exp", "log",
})
ARRAY_MODULES = ("numpy.", "pandas.", "scipy.")
# Tensor methods whose result is a Python value or a shape, not a tensor.
NOT_TENSOR_RESULTS = frozenset({
    "item", "tolist", "size", "dim", "numel", "numpy", "data_ptr", "element_size", "nelement",
    "stride", "storage_offset", "is_contiguous", "get_device", "ndimension", "__len__", "untyped_storage",
})
# torch functions whose result is not a tensor.
NOT_TENSOR_FUNCTIONS = frozenset({
    "torch.device", "torch.dtype", "torch.Size", "torch.is_tensor", "torch.is_floating_point",
    "torch.numel", "torch.get_default_dtype", "torch.is_grad_enabled", "torch.no_grad", "torch.enable_grad",
    "torch.inference_mode", "torch.set_grad_enabled", "torch.manual_seed", "torch.compile", "torch.load",
    "torch.save", "torch.finfo", "torch.iinfo", "torch.is_complex", "torch.is_nonzero", "torch.typename",
    "torch.get_rng_state", "torch.initial_seed", "torch.seed", "torch.set_default_dtype",
})
TENSOR_NAMESPACES = ("torch.nn.functional.", "torch.linalg.", "torch.special.", "torch.fft.")
MAX_DEPTH = 8


class TensorEvidence:
    """`is_tensor(expr)` for a rule: `resolve` is `ctx.resolve`, `value_of(name)` the local value a name
    holds (or None), `annotation_of(name)` a parameter's annotation (or None)."""

    def __init__(self, resolve: Callable, value_of: Callable[[str], Optional[cst.BaseExpression]],
                 annotation_of: Callable[[str], Optional[cst.BaseExpression]] = lambda name: None) -> None:
        self._resolve = resolve
        self._value_of = value_of
        self._annotation_of = annotation_of

    def is_tensor(self, expr: Optional[cst.BaseExpression], depth: int = 0) -> bool:
        if expr is None or depth > MAX_DEPTH:
            return False
        if isinstance(expr, cst.Name):
            annotation = self._annotation_of(expr.value)
            if annotation is not None and self._resolve(annotation) == "torch.Tensor":
                return True
            return self.is_tensor(self._value_of(expr.value), depth + 1)
        if isinstance(expr, cst.Subscript):
            return self.is_tensor(expr.value, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            return self.is_tensor(expr.left, depth + 1) or self.is_tensor(expr.right, depth + 1)
        if isinstance(expr, cst.UnaryOperation):
            return self.is_tensor(expr.expression, depth + 1)
        if isinstance(expr, cst.Call):
            return self._call(expr, depth)
        return False

    def _call(self, call: cst.Call, depth: int) -> bool:
        qualified = self._resolve(call.func)
        if qualified is not None:
            return self.is_torch_function(qualified)
        mc = method_call(call)
        if mc is None:
            return False
        receiver, name = mc
        if name in NOT_TENSOR_RESULTS:
            return False
        if name in TENSOR_ONLY_METHODS or any(a.keyword is not None and a.keyword.value in TENSOR_KEYWORDS
                                              for a in call.args):
            return True
        return self.is_tensor(receiver, depth + 1)

    @staticmethod
    def is_torch_function(qualified: str) -> bool:
        """A torch function returning a tensor: `torch.norm`, `torch.linalg.vector_norm`, `F.normalize`."""
        if qualified in NOT_TENSOR_FUNCTIONS:
            return False
        if qualified.startswith(TENSOR_NAMESPACES):
            return True
        module, _, last = qualified.rpartition(".")
        return module == "torch" and last[:1].islower()

    def is_array(self, expr: Optional[cst.BaseExpression], depth: int = 0) -> bool:
        """Evidence that `expr` is a NumPy array or a pandas object, not a tensor (see the module's docs)."""
        if expr is None or depth > MAX_DEPTH:
            return False
        if isinstance(expr, cst.Name):
            annotation = self._annotation_of(expr.value)
            if annotation is not None:
                return (self._resolve(annotation) or "").startswith(ARRAY_MODULES)
            return self.is_array(self._value_of(expr.value), depth + 1)
        if isinstance(expr, cst.Attribute):
            # `.values` is also a field of torch's (values, indices) results: only a pandas object's counts
            return expr.attr.value in ARRAY_ATTRIBUTES or (
                expr.attr.value in ("T", "values") and self.is_array(expr.value, depth + 1))
        if isinstance(expr, cst.Subscript):
            return self.is_array(expr.value, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            return self.is_array(expr.left, depth + 1) or self.is_array(expr.right, depth + 1)
        if isinstance(expr, cst.UnaryOperation):
            return self.is_array(expr.expression, depth + 1)
        if not isinstance(expr, cst.Call):
            return False
        qualified = self._resolve(expr.func)
        if qualified is not None:
            return qualified.startswith(ARRAY_MODULES)
        mc = method_call(expr)
        if mc is None:
            return False
        receiver, name = mc
        if name in ARRAY_METHODS:
            return True
        return name in SHARED_METHODS and self.is_array(receiver, depth + 1)
