"""What a fix must never do to real code, checked file by file: `lint_and_fix` is the precision suite's per-file
check (run by `benchmarks.suite.scan` in forked workers).

For a file with fixable findings, `gradlint fix --write` (safe fixes only) and, when some fix is unsafe,
`fix --write --unsafe-fixes` must each give code that compiles, that a second run leaves alone, that
uses no name the original did not define (the fix must bring its imports), and whose new `.eval()` /
`.train()` calls are on values, never on a name bound only to a function, a class or an imported module
(`setup_model.eval()` where `setup_model` is a `def`). The name checks are a small pass over `ast` and
`symtable`, no type inference: cheap, and they catch the classes of broken fix seen on real code.
"""

from __future__ import annotations

import ast
import builtins
import symtable
import warnings
from collections import Counter

from gradlint.diagnostics import UNSAFE
from gradlint.engine import fix_text, lint_text

MODE_METHODS = ("eval", "train")
# How a name can be bound besides to a value; `from m import x` may import a value, so it counts as one.
_KINDS = {"def": "a function defined here", "class": "a class", "module": "an imported module"}
_IMPLICIT = set(dir(builtins)) | {"__file__", "__name__", "__doc__", "__spec__", "__loader__", "__package__",
                                  "__path__", "__builtins__", "__annotations__", "__dict__", "__module__",
                                  "__qualname__", "__class__"}


def lint_and_fix(text: str, rel: str, rules: list) -> tuple[list, list]:
    """([(row, code, message)] found in `text`, [problem, ...] with its fixes)."""
    findings = [f for f in lint_text(text, rel, rules, edits=False) if not f.is_file_error]
    problems = []
    for unsafe in (False, True):
        fixable = [f for f in findings if f.fixable(unsafe)]
        if not fixable or (unsafe and not any(f.fix.applicability == UNSAFE for f in fixable)):
            continue  # nothing to fix, or --unsafe-fixes would do what the safe run did
        command = "fix --write --unsafe-fixes" if unsafe else "fix --write"
        problems += [f"`{command}` {problem}" for problem in _fix_problems(text, rel, rules, unsafe)]
    return [(f.location.row, f.code, f.message) for f in findings], problems


def _fix_problems(text: str, rel: str, rules: list, unsafe: bool) -> list[str]:
    fixed = fix_text(text, rel, rules, unsafe=unsafe)
    try:
        compile(fixed.text, rel, "exec")
    except SyntaxError as error:
        return [f"gives code that does not compile: {error}"]
    problems = []
    if any(f.fixable(unsafe) for f in fixed.remaining):
        if fix_text(fixed.text, rel, rules, unsafe=unsafe).text != fixed.text:
            problems.append("is not idempotent: a second run changes the file again")
    problems += introduced_name_problems(text, fixed.text)
    return problems


# -- names a fix introduces -------------------------------------------------------------------------------

def introduced_name_problems(before: str, after: str) -> list[str]:
    """What the rewrite `before` -> `after` broke about names: names it uses that nothing defines, and new
    `X.eval()`/`X.train()` calls where `X` is bound only by `def`, `class` or `import`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old, new = ast.parse(before), ast.parse(after)
    problems = [f"uses `{name}`, which the fixed file never defines"
                for name in sorted(undefined_names(after, new) - undefined_names(before, old))]
    calls = Counter((scope, name, method) for scope, name, method, _ in _mode_calls(old))
    for scope, name, method, kinds in _mode_calls(new):
        if calls[(scope, name, method)] > 0:
            calls[(scope, name, method)] -= 1  # there before the fix
        elif kinds and "value" not in kinds:
            what = " or ".join(_KINDS[kind] for kind in sorted(kinds))
            problems.append(f"calls `{name}.{method}()` in `{scope}`, where `{name}` is {what}, not an nn.Module")
    return problems


def undefined_names(text: str, tree: ast.Module) -> set[str]:
    """Names read somewhere that no scope can resolve (empty when a star import makes it unknowable)."""
    if any(isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names) for node in ast.walk(tree)):
        return set()
    table = symtable.symtable(text, "<fixed>", "exec")
    module = {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
    undefined, stack = set(), [table]
    while stack:
        scope = stack.pop()
        stack.extend(scope.get_children())
        undefined |= {s.get_name() for s in scope.get_symbols()
                      if s.is_referenced() and s.is_global() and not s.is_assigned() and not s.is_imported()}
    return undefined - module - _IMPLICIT


def _mode_calls(tree: ast.Module):
    """(scope qualname, name, method, binding kinds of `name` where called) of every `name.eval()/.train()`."""
    found = []

    def visit(node, scopes):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            scopes = [*scopes, node]
        for child in ast.iter_child_nodes(node):
            visit(child, scopes)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in MODE_METHODS and isinstance(node.func.value, ast.Name)):
            name = node.func.value.id
            qualname = ".".join(getattr(s, "name", "<lambda>") for s in scopes[1:]) or "<module>"
            found.append((qualname, name, node.func.attr, _binding_kinds(name, scopes)))

    visit(tree, [tree])
    return found


def _binding_kinds(name: str, scopes: list) -> set[str]:
    """How `name` is bound in the innermost scope of `scopes` that binds it (class bodies are skipped by the
    functions they hold, as Python resolves names): a subset of {"def", "class", "module", "value"}."""
    innermost = scopes[-1]
    for scope in reversed(scopes):
        if isinstance(scope, ast.ClassDef) and scope is not innermost:
            continue
        kinds = _bindings(scope).get(name)
        if kinds:
            return kinds
    return set()


def _bindings(scope) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}

    def bind(name, kind):
        kinds.setdefault(name, set()).add(kind)

    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        arguments = scope.args
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                    arguments.vararg, arguments.kwarg]:
            if arg is not None:
                bind(arg.arg, "value")
    body = scope.body if isinstance(scope.body, list) else [scope.body]
    stack = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bind(node.name, "def")
            continue  # its body is its own scope
        if isinstance(node, ast.ClassDef):
            bind(node.name, "class")
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bind((alias.asname or alias.name).split(".")[0], "module" if isinstance(node, ast.Import) else "value")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bind(node.id, "value")
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bind(node.name, "value")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                bind(name, "value")  # bound elsewhere: not decidable here, so never reported
        stack.extend(ast.iter_child_nodes(node))
    return kinds
