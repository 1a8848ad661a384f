"""HCL native syntax, as bake files use it: python-hcl2's parser (its Lark grammar) gives the
syntax tree; this module turns it into a small expression tree for `polyarch.bake.evaluate`.
Pure.

What is kept is what HCL evaluates: attributes and blocks (with labels and lines, for
messages), literals, templates (interpolations, `%{if}`/`%{for}` directives and their `~`
strip markers, heredocs with `<<-` indentation trimming), variables, attribute and index
access, splats, function calls (with `...` expansion), tuples and objects, `for` expressions,
conditionals and operators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from lark import Token, Tree
from lark.exceptions import LarkError

from polyarch.errors import PolyarchError


class HclError(PolyarchError):
    """A bake file that is not valid HCL, or an expression that cannot be evaluated; the
    message names the file and line."""


# the tree ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any
    line: int = 0


@dataclass(frozen=True, slots=True)
class Var:
    name: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class GetAttr:
    obj: Expr
    name: str
    line: int = 0


@dataclass(frozen=True, slots=True)
class Index:
    obj: Expr
    key: Expr
    line: int = 0


@dataclass(frozen=True, slots=True)
class Splat:
    """`obj[*].a[0]` / `obj.*.a`: the steps applied to each element (a non-list is taken as
    a list of itself, null as an empty list)."""

    obj: Expr
    steps: tuple[tuple[str, Any], ...]  # ("attr", name) or ("index", Expr)
    line: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    expand: bool = False  # the last argument is a list spread into arguments (`...`)
    line: int = 0


@dataclass(frozen=True, slots=True)
class TupleExpr:
    items: tuple[Expr, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class ObjectExpr:
    """Items as (key, value); a bare identifier as a key is its name, not a variable."""

    items: tuple[tuple[Expr, Expr], ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class ForExpr:
    key_var: str | None
    value_var: str
    collection: Expr
    key: Expr | None  # for an object result: the key expression
    value: Expr
    condition: Expr | None
    group: bool = False  # `...`: values of one key grouped in a list
    line: int = 0


@dataclass(frozen=True, slots=True)
class Conditional:
    condition: Expr
    then: Expr
    otherwise: Expr
    line: int = 0


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    line: int = 0


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Expr
    line: int = 0


@dataclass(frozen=True, slots=True)
class Interp:
    expr: Expr


@dataclass(frozen=True, slots=True)
class IfPart:
    condition: Expr
    then: tuple[TemplatePart, ...]
    otherwise: tuple[TemplatePart, ...] = ()


@dataclass(frozen=True, slots=True)
class ForPart:
    key_var: str | None
    value_var: str
    collection: Expr
    body: tuple[TemplatePart, ...]


TemplatePart: TypeAlias = str | Interp | IfPart | ForPart


@dataclass(frozen=True, slots=True)
class Template:
    """A string with interpolations and directives. One that is a single interpolation and
    nothing else is the value itself, not its text (HCL's rule)."""

    parts: tuple[TemplatePart, ...]
    line: int = 0


Expr: TypeAlias = (
    Lit | Var | GetAttr | Index | Splat | Call | TupleExpr | ObjectExpr | ForExpr | Conditional
    | Binary | Unary | Template
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    expr: Expr
    line: int


@dataclass(frozen=True, slots=True)
class Block:
    type: str
    labels: tuple[str, ...]
    body: Body
    line: int


@dataclass(frozen=True, slots=True)
class Body:
    attributes: dict[str, Attribute] = field(default_factory=dict)
    blocks: tuple[Block, ...] = ()


# parsing -------------------------------------------------------------------------------------


def parse(text: str, filename: str) -> Body:
    """The body of an HCL file; a syntax error is an `HclError` naming `filename:line`."""
    from hcl2.api import parses_to_tree  # noqa: PLC0415 (lark's grammar loads only for bake)

    try:
        tree = parses_to_tree(text)
    except LarkError as exc:
        line = getattr(exc, "line", 0) or 0
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HclError(f"{filename}:{line}: invalid HCL: {detail}") from None
    return _Converter(filename).body(_child(tree, "body"))


def parse_expression(text: str, filename: str = "<expression>") -> Expr:
    """One expression, as written after `=`."""
    body = parse(f"_ = {text}\n", filename)
    return body.attributes["_"].expr


def _child(tree: Tree[Any], name: str) -> Tree[Any]:
    for child in tree.children:
        if isinstance(child, Tree) and child.data == name:
            return child
    raise HclError(f"malformed HCL tree: no {name}")


def _trees(tree: Tree[Any]) -> list[Tree[Any]]:
    """The children that are rules, less newlines and comments."""
    return [c for c in tree.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def _tokens(tree: Tree[Any]) -> list[Token]:
    return [c for c in tree.children if isinstance(c, Token)]


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "uU" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise HclError(f"invalid escape sequence \\{code}")

    return _ESCAPE.sub(one, text)


class _Converter:
    def __init__(self, filename: str) -> None:
        self.filename = filename

    def fail(self, line: int, message: str) -> HclError:
        return HclError(f"{self.filename}:{line}: {message}")

    # structure ---------------------------------------------------------------------------

    def body(self, tree: Tree[Any]) -> Body:
        attributes: dict[str, Attribute] = {}
        blocks: list[Block] = []
        for item in _trees(tree):
            if item.data == "attribute":
                name_tree, *rest = _trees(item)
                name = self.name(name_tree)
                line = _line(item)
                if name in attributes:
                    raise self.fail(line, f"attribute {name!r} is set twice (first at line "
                                    f"{attributes[name].line})")  # fmt: skip
                attributes[name] = Attribute(name, self.expr(rest[-1]), line)
            elif item.data == "block":
                parts = _trees(item)
                kind = self.name(parts[0])
                labels = tuple(self.label(p) for p in parts[1:-1])
                blocks.append(Block(kind, labels, self.body(parts[-1]), _line(item)))
        return Body(attributes, tuple(blocks))

    def name(self, tree: Tree[Any]) -> str:
        tokens = [t for t in tree.scan_values(lambda v: isinstance(v, Token))]
        return str(tokens[0]) if tokens else ""

    def label(self, tree: Tree[Any]) -> str:
        if tree.data == "string":
            template = self.string(tree)
            if not all(isinstance(p, str) for p in template.parts):
                raise self.fail(_line(tree), "a block label cannot hold an interpolation")
            return "".join(p for p in template.parts if isinstance(p, str))
        return self.name(tree)

    # expressions -------------------------------------------------------------------------

    def expr(self, tree: Tree[Any] | Token) -> Expr:
        if isinstance(tree, Token):
            raise self.fail(tree.line or 0, f"unexpected {tree!s}")
        line = _line(tree)
        data = tree.data
        if data == "expr_term":
            if any(isinstance(c, Token) and c.type == "LPAR" for c in tree.children):
                return self.expr(_trees(tree)[0])
            return self.expr(_trees(tree)[0])
        method = getattr(self, f"_{data}", None)
        if method is None:
            raise self.fail(line, f"unsupported HCL expression ({data})")
        result: Expr = method(tree, line)
        return result

    def _int_lit(self, tree: Tree[Any], line: int) -> Expr:
        return Lit(int(str(_tokens(tree)[0])), line)

    def _float_lit(self, tree: Tree[Any], line: int) -> Expr:
        value = float(str(_tokens(tree)[0]))
        return Lit(int(value) if value.is_integer() and "e" not in str(_tokens(tree)[0]).lower()
                   else value, line)  # fmt: skip

    def _literal_value(self, tree: Tree[Any], line: int) -> Expr:
        return Lit({"true": True, "false": False, "null": None}[str(_tokens(tree)[0])], line)

    def _identifier(self, tree: Tree[Any], line: int) -> Expr:
        return Var(str(_tokens(tree)[0]), line)

    def _keyword(self, tree: Tree[Any], line: int) -> Expr:
        return Var(str(_tokens(tree)[0]), line)

    def _string(self, tree: Tree[Any], line: int) -> Expr:
        return self.string(tree)

    def _template_string(self, tree: Tree[Any], line: int) -> Expr:
        text = str(_tokens(tree)[0])
        return Lit(_unescape(text[2:-2]), line)

    def _heredoc_template(self, tree: Tree[Any], line: int) -> Expr:
        return self.heredoc(str(_tokens(tree)[0]), line, trim=False)

    def _heredoc_template_trim(self, tree: Tree[Any], line: int) -> Expr:
        return self.heredoc(str(_tokens(tree)[0]), line, trim=True)

    def _tuple(self, tree: Tree[Any], line: int) -> Expr:
        return TupleExpr(tuple(self.expr(t) for t in _trees(tree)), line)

    def _object(self, tree: Tree[Any], line: int) -> Expr:
        items = []
        for elem in _trees(tree):
            key_tree, value_tree = _trees(elem)
            inner = _trees(key_tree)
            key: Expr
            if not inner:  # a keyword (`in`, `for`) as a key
                key = Lit(self.name(key_tree), line)
            else:
                key = self.expr(inner[0])
                if isinstance(key, Var):  # a bare identifier names the key itself
                    key = Lit(key.name, key.line)
            items.append((key, self.expr(value_tree)))
        return ObjectExpr(tuple(items), line)

    def _function_call(self, tree: Tree[Any], line: int) -> Expr:
        parts = _trees(tree)
        names = [p for p in parts if p.data == "identifier"]
        name = "::".join(self.name(n) for n in names)
        args: tuple[Expr, ...] = ()
        expand = False
        for part in parts:
            if part.data == "arguments":
                args = tuple(self.expr(a) for a in _trees(part))
                expand = any(t.type == "ELLIPSIS" for t in _tokens(part))
        return Call(name, args, expand, line)

    def _index_expr_term(self, tree: Tree[Any], line: int) -> Expr:
        obj, index = _trees(tree)
        return Index(self.expr(obj), self.index_key(index), line)

    def index_key(self, index: Tree[Any]) -> Expr:
        if index.data == "short_index":  # `.0`
            return Lit(int(str(_tokens(index)[-1])), _line(index))
        return self.expr(_trees(index)[0])

    def _get_attr_expr_term(self, tree: Tree[Any], line: int) -> Expr:
        obj, attr = _trees(tree)
        return GetAttr(self.expr(obj), self.name(_trees(attr)[0]), line)

    def _attr_splat_expr_term(self, tree: Tree[Any], line: int) -> Expr:
        return self.splat(tree, line)

    def _full_splat_expr_term(self, tree: Tree[Any], line: int) -> Expr:
        return self.splat(tree, line)

    def splat(self, tree: Tree[Any], line: int) -> Expr:
        obj, splat = _trees(tree)
        steps: list[tuple[str, Any]] = []
        for step in _trees(splat):
            if step.data == "get_attr":
                steps.append(("attr", self.name(_trees(step)[0])))
            else:
                steps.append(("index", self.index_key(step)))
        return Splat(self.expr(obj), tuple(steps), line)

    def for_intro(self, tree: Tree[Any]) -> tuple[str | None, str, Expr]:
        parts = _trees(tree)
        names = [self.name(p) for p in parts if p.data == "identifier"]
        collection = self.expr(parts[-1])
        if len(names) == 2:
            return names[0], names[1], collection
        return None, names[0], collection

    def _for_tuple_expr(self, tree: Tree[Any], line: int) -> Expr:
        parts = _trees(tree)
        key_var, value_var, collection = self.for_intro(parts[0])
        condition = None
        if parts[-1].data == "for_cond":
            condition = self.expr(_trees(parts[-1])[0])
        return ForExpr(key_var, value_var, collection, None, self.expr(parts[1]), condition,
                       line=line)  # fmt: skip

    def _for_object_expr(self, tree: Tree[Any], line: int) -> Expr:
        parts = _trees(tree)
        key_var, value_var, collection = self.for_intro(parts[0])
        condition = None
        if parts[-1].data == "for_cond":
            condition = self.expr(_trees(parts[-1])[0])
        group = any(isinstance(t, Token) and t.type == "ELLIPSIS" for t in tree.children)
        return ForExpr(key_var, value_var, collection, self.expr(parts[1]),
                       self.expr(parts[2]), condition, group, line)  # fmt: skip

    def _conditional(self, tree: Tree[Any], line: int) -> Expr:
        condition, then, otherwise = _trees(tree)
        return Conditional(self.expr(condition), self.expr(then), self.expr(otherwise), line)

    def _binary_op(self, tree: Tree[Any], line: int) -> Expr:
        left, term = _trees(tree)[:2]
        operator, right = _trees(term)
        return Binary(str(_tokens(operator)[0]), self.expr(left), self.expr(right), line)

    def _unary_op(self, tree: Tree[Any], line: int) -> Expr:
        return Unary(str(_tokens(tree)[0]), self.expr(_trees(tree)[0]), line)

    # templates ---------------------------------------------------------------------------

    def string(self, tree: Tree[Any]) -> Template:
        line = _line(tree)
        flat: list[Any] = []  # str, Interp, or ("if"|"else"|"endif"|"for"|"endfor", ...)
        for part in _trees(tree):
            inner = part.children[0]
            if isinstance(inner, Token):
                if inner.type in ("ESCAPED_INTERPOLATION", "ESCAPED_DIRECTIVE"):
                    flat.append(str(inner)[1:])  # `$${` is a literal `${`
                else:
                    flat.append(_unescape(str(inner)))
                continue
            flat.append(self.directive(inner))
        return Template(self.assemble(flat, line), line)

    def directive(self, tree: Tree[Any]) -> Any:
        strip = [t for t in _tokens(tree) if t.type == "STRIP_MARKER"]
        tokens = _tokens(tree)
        left = bool(strip) and tokens.index(strip[0]) == 1
        right = bool(strip) and tokens[-2].type == "STRIP_MARKER"
        kind = tree.data
        if kind == "interpolation":
            return Interp(self.expr(_trees(tree)[0]))
        if kind == "template_if_start":
            return ("if", left, right, self.expr(_trees(tree)[0]))
        if kind == "template_else":
            return ("else", left, right)
        if kind == "template_endif":
            return ("endif", left, right)
        if kind == "template_for_start":
            parts = _trees(tree)
            names = [self.name(p) for p in parts if p.data == "identifier"]
            key_var, value_var = (names[0], names[1]) if len(names) == 2 else (None, names[0])
            return ("for", left, right, key_var, value_var, self.expr(parts[-1]))
        if kind == "template_endfor":
            return ("endfor", left, right)
        raise self.fail(_line(tree), f"unsupported template part ({kind})")

    def assemble(self, flat: list[Any], line: int) -> tuple[TemplatePart, ...]:
        """Nest `%{if}`/`%{for}` directives, applying their `~` strip markers."""
        for i, item in enumerate(flat):  # strip markers eat the whitespace beside them
            if isinstance(item, tuple):
                if item[1] and i > 0 and isinstance(flat[i - 1], str):
                    flat[i - 1] = flat[i - 1].rstrip()
                if item[2] and i + 1 < len(flat) and isinstance(flat[i + 1], str):
                    flat[i + 1] = flat[i + 1].lstrip()
        position = 0

        def run(until: tuple[str, ...]) -> tuple[list[TemplatePart], str]:
            nonlocal position
            out: list[TemplatePart] = []
            while position < len(flat):
                item = flat[position]
                position += 1
                if isinstance(item, str):
                    if out and isinstance(out[-1], str):
                        out[-1] += item
                    elif item:
                        out.append(item)
                elif isinstance(item, Interp):
                    out.append(item)
                elif item[0] in until:
                    return out, item[0]
                elif item[0] == "if":
                    then, ended = run(("else", "endif"))
                    otherwise: list[TemplatePart] = []
                    if ended == "else":
                        otherwise, ended = run(("endif",))
                    if ended != "endif":
                        raise self.fail(line, "%{if} without %{endif}")
                    out.append(IfPart(item[3], tuple(then), tuple(otherwise)))
                elif item[0] == "for":
                    body, ended = run(("endfor",))
                    if ended != "endfor":
                        raise self.fail(line, "%{for} without %{endfor}")
                    out.append(ForPart(item[3], item[4], item[5], tuple(body)))
                else:
                    raise self.fail(line, f"%{{{item[0]}}} without its opening directive")
            return out, ""

        parts, _end = run(())
        return tuple(parts)

    def heredoc(self, token: str, line: int, *, trim: bool) -> Expr:
        lines = token.split("\n")
        body_lines = lines[1:-2] if lines[-1] == "" else lines[1:-1]
        body_lines = [ln.rstrip("\r") for ln in body_lines]
        if trim:
            indents = [len(ln) - len(ln.lstrip(" \t")) for ln in body_lines if ln.strip()]
            cut = min(indents, default=0)
            body_lines = [ln[cut:] for ln in body_lines]
        text = "\n".join(body_lines) + ("\n" if body_lines else "")
        if "${" not in text and "%{" not in text:
            return Template((text,) if text else (), line)
        source = _as_quoted(text)
        try:
            expr = parse_expression(source, self.filename)
        except HclError as exc:
            raise self.fail(line, f"in a heredoc: {exc}") from None
        assert isinstance(expr, Template)
        return Template(expr.parts, line)


def _line(tree: Tree[Any]) -> int:
    meta = getattr(tree, "meta", None)
    line = getattr(meta, "line", None) if meta is not None else None
    if line:
        return int(line)
    for token in tree.scan_values(lambda v: isinstance(v, Token)):
        if token.line:
            return int(token.line)
    return 0


def _as_quoted(text: str) -> str:
    """A heredoc's body as a quoted HCL string: literal text escaped, `${...}` and `%{...}`
    kept as they are (heredocs have no backslash escapes of their own)."""
    out = ['"']
    i = 0
    while i < len(text):
        if text.startswith(("$${", "%%{"), i):
            out.append(text[i : i + 3])
            i += 3
        elif text.startswith(("${", "%{"), i):
            end = _end_of_braces(text, i + 2)
            out.append(text[i:end])
            i = end
        else:
            char = text[i]
            out.append({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r",
                        "\t": "\\t"}.get(char, char))  # fmt: skip
            i += 1
    out.append('"')
    return "".join(out)


def _end_of_braces(text: str, i: int) -> int:
    """The index after the `}` that closes the `{` before `i`: nested braces and quoted
    strings (with their own interpolations) skipped."""
    depth = 1
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _end_of_string(text, i + 1)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise HclError("an interpolation in a heredoc is not closed")


def _end_of_string(text: str, i: int) -> int:
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith("${", i):
            i = _end_of_braces(text, i + 2)
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    raise HclError("a string in a heredoc's interpolation is not closed")
