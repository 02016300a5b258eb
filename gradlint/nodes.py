"""Small questions rules ask about LibCST nodes, and small node builders for their fixes.

Plain isinstance checks rather than ``libcst.matchers``: importing matchers alone costs 140 ms a process.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst


def arg(call: cst.Call, position: Optional[int], keyword: Optional[str] = None) -> Optional[cst.Arg]:
    """The argument passed at `position` or as `keyword`, or None (also when *args hide positions)."""
    if keyword is not None:
        for a in call.args:
            if a.keyword is not None and a.keyword.value == keyword:
                return a
    if position is None:
        return None
    index = 0
    for a in call.args:
        if a.keyword is not None or a.star == "**":
            continue
        if a.star == "*":
            return None
        if index == position:
            return a
        index += 1
    return None


def arg_value(call: cst.Call, position: Optional[int], keyword: Optional[str] = None):
    found = arg(call, position, keyword)
    return found.value if found is not None else None


def has_star_args(call: cst.Call) -> bool:
    return any(a.star for a in call.args)


def positional_count(call: cst.Call) -> int:
    return sum(1 for a in call.args if a.keyword is None and not a.star)


def number(expr: Optional[cst.BaseExpression]) -> Optional[float]:
    """The value of a numeric literal (`1e-8`, `-1`, `0.0`), else None."""
    if isinstance(expr, (cst.Integer, cst.Float)):
        try:
            return float(expr.evaluated_value)
        except (ValueError, OverflowError):
            return None
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, (cst.Minus, cst.Plus)):
        inner = number(expr.expression)
        if inner is None:
            return None
        return -inner if isinstance(expr.operator, cst.Minus) else inner
    return None


def is_name(expr: Optional[cst.CSTNode], *names: str) -> bool:
    return isinstance(expr, cst.Name) and (not names or expr.value in names)


def method_call(node: cst.CSTNode) -> Optional[tuple[cst.BaseExpression, str]]:
    """(receiver, method name) for `receiver.method(...)`, else None."""
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        return node.func.value, node.func.attr.value
    return None


def root_name(expr: cst.BaseExpression) -> Optional[str]:
    """`model` for `model.encoder.layers[0](x).norm`, else None."""
    while True:
        if isinstance(expr, cst.Name):
            return expr.value
        if isinstance(expr, (cst.Attribute, cst.Subscript)):
            expr = expr.value
        elif isinstance(expr, cst.Call):
            expr = expr.func
        else:
            return None


def is_pure(expr: cst.BaseExpression) -> bool:
    """A name, attribute chain or simple subscript: evaluating it twice or once gives the same value."""
    if isinstance(expr, cst.Name):
        return True
    if isinstance(expr, cst.Attribute):
        return is_pure(expr.value)
    if isinstance(expr, cst.Subscript):
        if not is_pure(expr.value):
            return False
        for element in expr.slice:
            index = element.slice
            if isinstance(index, cst.Index):
                if not (isinstance(index.value, (cst.Name, cst.Integer, cst.Ellipsis))
                        or number(index.value) is not None):
                    return False
            elif isinstance(index, cst.Slice):
                if any(part is not None and number(part) is None and not isinstance(part, cst.Name)
                       for part in (index.lower, index.upper, index.step)):
                    return False
        return True
    return False


def same_code(a: cst.CSTNode, b: cst.CSTNode) -> bool:
    return a.deep_equals(b)


def is_atom(expr: cst.BaseExpression) -> bool:
    """Binds tighter than any operator, so a method can be called on it without parentheses."""
    return bool(expr.lpar) or isinstance(expr, (cst.Name, cst.Attribute, cst.Call, cst.Subscript))


def parenthesized(expr: cst.BaseExpression) -> cst.BaseExpression:
    if is_atom(expr):
        return expr
    return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


def format_number(value: float) -> str:
    """`1e-6` rather than Python's `1e-06`; integers stay integers."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value)) if isinstance(value, int) else repr(value)
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else ""
        text = f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return text


def number_node(value: float) -> cst.BaseExpression:
    return cst.parse_expression(format_number(value))


def method(receiver: cst.BaseExpression, name: str, *args: cst.BaseExpression,
           **kwargs: cst.BaseExpression) -> cst.Call:
    """`receiver.name(*args, **kwargs)`, parenthesizing the receiver where needed."""
    return cst.Call(func=cst.Attribute(value=parenthesized(receiver), attr=cst.Name(name)),
                    args=make_args(*args, **kwargs))


def make_args(*args: cst.BaseExpression, **kwargs: cst.BaseExpression) -> list[cst.Arg]:
    out = [cst.Arg(value=a) for a in args]
    out += [cst.Arg(value=v, keyword=cst.Name(k),
                    equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                          whitespace_after=cst.SimpleWhitespace("")))
            for k, v in kwargs.items()]
    return out


def expression_statement(code: str) -> cst.SimpleStatementLine:
    return cst.parse_statement(code + "\n")
