"""Evaluating HCL expressions (`polyarch.bake.hcl`'s tree) to Python values, as HCL and go-cty
do: null, bool, numbers (int or float), strings, lists and objects (dicts). Pure.

Names are looked up in a `Scope`: the bake file's variables, other blocks' attributes
(`target.app.tags`), `for` and function parameters; functions are the standard library
(`polyarch.bake.functions`) and the file's own. Conversions follow cty's: a number or bool
where a string is wanted becomes its text, a string of a number where a number is wanted
becomes the number, "true"/"false" where a bool is wanted; anything else is an error that
names the file and line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from polyarch.bake.hcl import (
    Binary,
    Call,
    Conditional,
    Expr,
    ForExpr,
    ForPart,
    GetAttr,
    HclError,
    IfPart,
    Index,
    Interp,
    Lit,
    ObjectExpr,
    Splat,
    Template,
    TemplatePart,
    TupleExpr,
    Unary,
    Var,
)

Function = Callable[..., Any]


class Lazy(Protocol):
    """A value whose attributes are evaluated when asked for (a block: `target.app`)."""

    def attribute(self, name: str) -> Any: ...


class Scope(Protocol):
    filename: str

    def lookup(self, name: str, line: int) -> Any: ...

    def function(self, name: str, line: int) -> Function: ...


class ChildScope:
    """`names` over a parent scope (the variables of a `for`, a function's parameters)."""

    def __init__(self, parent: Scope, names: Mapping[str, Any]) -> None:
        self.parent = parent
        self.names = dict(names)
        self.filename = parent.filename

    def lookup(self, name: str, line: int) -> Any:
        if name in self.names:
            return self.names[name]
        return self.parent.lookup(name, line)

    def function(self, name: str, line: int) -> Function:
        return self.parent.function(name, line)


class EvalError(HclError):
    pass


def evaluate(expr: Expr, scope: Scope) -> Any:
    return _Evaluator(scope).value(expr)


# conversions ---------------------------------------------------------------------------------


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "tuple"
    if isinstance(value, dict):
        return "object"
    return "block"


def number_text(value: int | float) -> str:
    """A number as cty writes it: no exponent, no trailing zeros (1.0 is "1")."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer():
        return str(int(value))
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def to_string(value: Any, what: str = "value") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    if value is None:
        raise EvalError(f"the {what} is null where a string is needed")
    raise EvalError(f"the {what} is a {type_name(value)} where a string is needed")


def to_number(value: Any, what: str = "value") -> int | float:
    if isinstance(value, bool) or value is None:
        raise EvalError(f"the {what} is a {type_name(value)} where a number is needed")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise EvalError(f"the {what} {value!r} is not a number") from None
        return int(number) if number.is_integer() and "e" not in value.lower() else number
    raise EvalError(f"the {what} is a {type_name(value)} where a number is needed")


def to_bool(value: Any, what: str = "value") -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    raise EvalError(f"the {what} is a {type_name(value)} where a bool is needed")


def to_list(value: Any, what: str = "value") -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, set | tuple):
        return list(value)
    raise EvalError(f"the {what} is a {type_name(value)} where a list is needed")


def equal(a: Any, b: Any) -> bool:
    """cty's equality: values of different types are different (1 is not "1")."""
    if type_name(a) != type_name(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return bool(a == b)


# the evaluator -------------------------------------------------------------------------------


class _Evaluator:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def fail(self, line: int, message: str) -> EvalError:
        return EvalError(f"{self.scope.filename}:{line}: {message}")

    def value(self, expr: Expr) -> Any:
        try:
            return self._value(expr)
        except EvalError as exc:
            if str(exc).startswith(f"{self.scope.filename}:"):
                raise
            raise self.fail(getattr(expr, "line", 0), str(exc)) from None

    def _value(self, expr: Expr) -> Any:
        if isinstance(expr, Lit):
            return expr.value
        if isinstance(expr, Template):
            return self.template(expr)
        if isinstance(expr, Var):
            return self.scope.lookup(expr.name, expr.line)
        if isinstance(expr, GetAttr):
            return self.attribute(self.value(expr.obj), expr.name, expr.line)
        if isinstance(expr, Index):
            return self.index(self.value(expr.obj), self.value(expr.key), expr.line)
        if isinstance(expr, Splat):
            return self.splat(expr)
        if isinstance(expr, Call):
            return self.call(expr)
        if isinstance(expr, TupleExpr):
            return [self.value(item) for item in expr.items]
        if isinstance(expr, ObjectExpr):
            out: dict[str, Any] = {}
            for key_expr, value_expr in expr.items:
                key = self.value(key_expr)
                if key is None:
                    raise self.fail(expr.line, "an object key is null")
                out[to_string(key, "object key")] = self.value(value_expr)
            return out
        if isinstance(expr, ForExpr):
            return self.for_expr(expr)
        if isinstance(expr, Conditional):
            condition = to_bool(self.value(expr.condition), "condition")
            return self.value(expr.then if condition else expr.otherwise)
        if isinstance(expr, Binary):
            return self.binary(expr)
        if isinstance(expr, Unary):
            operand = self.value(expr.operand)
            if expr.op == "!":
                return not to_bool(operand, "operand of !")
            number = to_number(operand, "operand of -")
            return -number
        raise self.fail(0, f"cannot evaluate {type(expr).__name__}")

    def attribute(self, obj: Any, name: str, line: int) -> Any:
        if isinstance(obj, dict):
            if name not in obj:
                raise self.fail(line, f"this object has no attribute {name!r}")
            return obj[name]
        if hasattr(obj, "attribute"):
            return obj.attribute(name)
        if isinstance(obj, list) and name.isdigit():
            return self.index(obj, int(name), line)
        raise self.fail(line, f"a {type_name(obj)} has no attributes (.{name})")

    def index(self, obj: Any, key: Any, line: int) -> Any:
        if isinstance(obj, list):
            number = to_number(key, "index")
            if not float(number).is_integer():
                raise self.fail(line, f"the index {number} is not a whole number")
            position = int(number)
            if not 0 <= position < len(obj):
                raise self.fail(line, f"the index {position} is out of range (the list has "
                                f"{len(obj)} elements)")  # fmt: skip
            return obj[position]
        if isinstance(obj, dict):
            name = to_string(key, "key")
            if name not in obj:
                raise self.fail(line, f"this object has no element {name!r}")
            return obj[name]
        if hasattr(obj, "attribute"):
            return obj.attribute(to_string(key, "key"))
        raise self.fail(line, f"a {type_name(obj)} cannot be indexed")

    def splat(self, expr: Splat) -> Any:
        base = self.value(expr.obj)
        items = [] if base is None else base if isinstance(base, list) else [base]
        out = []
        for item in items:
            current = item
            for kind, step in expr.steps:
                if kind == "attr":
                    current = self.attribute(current, step, expr.line)
                else:
                    current = self.index(current, self.value(step), expr.line)
            out.append(current)
        return out

    def call(self, expr: Call) -> Any:
        if expr.name == "try":  # the first argument that evaluates without an error
            for argument in expr.args:
                try:
                    return self.value(argument)
                except EvalError:
                    continue
            raise self.fail(expr.line, "try(): no expression succeeded")
        if expr.name == "can":
            if len(expr.args) != 1:
                raise self.fail(expr.line, "can() takes one argument")
            try:
                self.value(expr.args[0])
            except EvalError:
                return False
            return True
        function = self.scope.function(expr.name, expr.line)
        args = [self.value(a) for a in expr.args]
        if expr.expand:
            if not args:
                raise self.fail(expr.line, "... needs an argument to expand")
            last = args.pop()
            if last is None:
                last = []
            args.extend(to_list(last, "argument expanded with ..."))
        try:
            return function(*args)
        except EvalError as exc:
            raise self.fail(expr.line, f"{expr.name}(): {exc}") from None
        except (TypeError, ValueError, ArithmeticError, KeyError, IndexError) as exc:
            raise self.fail(expr.line, f"{expr.name}(): {exc}") from None

    def for_expr(self, expr: ForExpr) -> Any:
        collection = self.value(expr.collection)
        if collection is None:
            raise self.fail(expr.line, "a for expression over null")
        if isinstance(collection, dict):
            pairs: list[tuple[Any, Any]] = sorted(collection.items())
        elif isinstance(collection, list):
            pairs = list(enumerate(collection))
        else:
            raise self.fail(expr.line, f"a for expression over a {type_name(collection)}")
        tuple_out: list[Any] = []
        object_out: dict[str, Any] = {}
        for key, item in pairs:
            names = {expr.value_var: item}
            if expr.key_var is not None:
                names[expr.key_var] = key
            scope = ChildScope(self.scope, names)
            inner = _Evaluator(scope)
            if expr.condition is not None and not to_bool(inner.value(expr.condition),
                                                          "for condition"):  # fmt: skip
                continue
            if expr.key is None:
                tuple_out.append(inner.value(expr.value))
                continue
            name = to_string(inner.value(expr.key), "for key")
            value = inner.value(expr.value)
            if expr.group:
                object_out.setdefault(name, []).append(value)
            elif name in object_out:
                raise self.fail(expr.line, f"duplicate key {name!r} in a for expression (add "
                                "... to group the values)")  # fmt: skip
            else:
                object_out[name] = value
        return tuple_out if expr.key is None else object_out

    def binary(self, expr: Binary) -> Any:
        op = expr.op
        if op in ("&&", "||"):
            left = to_bool(self.value(expr.left), f"operand of {op}")
            if op == "&&" and not left:
                return False
            if op == "||" and left:
                return True
            return to_bool(self.value(expr.right), f"operand of {op}")
        left, right = self.value(expr.left), self.value(expr.right)
        if op == "==":
            return equal(left, right)
        if op == "!=":
            return not equal(left, right)
        a, b = to_number(left, f"operand of {op}"), to_number(right, f"operand of {op}")
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                raise self.fail(expr.line, "division by zero")
            quotient = a / b
            return int(quotient) if quotient.is_integer() and isinstance(a, int) and isinstance(
                b, int) and a % b == 0 else quotient  # fmt: skip
        if op == "%":
            if b == 0:
                raise self.fail(expr.line, "modulo by zero")
            return a - b * int(a / b)  # the sign of the dividend, as Go's
        comparisons = {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}
        if op in comparisons:
            return comparisons[op]
        raise self.fail(expr.line, f"unknown operator {op}")

    def template(self, template: Template) -> Any:
        parts = template.parts
        if len(parts) == 1 and isinstance(parts[0], Interp):
            return self.value(parts[0].expr)  # "${x}" is x itself
        return self.render(parts)

    def render(self, parts: tuple[TemplatePart, ...]) -> str:
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Interp):
                value = self.value(part.expr)
                if value is None:
                    raise self.fail(getattr(part.expr, "line", 0),
                                    "a null value cannot be put in a string")  # fmt: skip
                out.append(to_string(value, "interpolated value"))
            elif isinstance(part, IfPart):
                taken = to_bool(self.value(part.condition), "%{if} condition")
                out.append(self.render(part.then if taken else part.otherwise))
            elif isinstance(part, ForPart):
                collection = self.value(part.collection)
                if isinstance(collection, dict):
                    pairs: list[tuple[Any, Any]] = sorted(collection.items())
                else:
                    pairs = list(enumerate(to_list(collection, "%{for} collection")))
                for key, item in pairs:
                    names = {part.value_var: item}
                    if part.key_var is not None:
                        names[part.key_var] = key
                    out.append(_Evaluator(ChildScope(self.scope, names)).render(part.body))
        return "".join(out)
