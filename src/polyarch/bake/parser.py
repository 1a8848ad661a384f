"""From parsed bake files (HCL, or JSON read as HCL's JSON syntax) to a `Config`, evaluating
as buildx's hclparser does. Pure: the environment is given as a lookup.

- `variable "NAME" { default, type, description, validation { condition, error_message } }`:
  the environment (or `--var`) overrides a variable, converted to its type (a typed list
  from CSV, any type from `NAME_JSON`); top-level attributes (`NAME = ...`) are values too,
  not overridable; built-ins (`BAKE_CMD_CONTEXT`, `BAKE_LOCAL_PLATFORM`) win over both.
- `function "name" { params = [a, b] variadic_params = rest result = ... }`.
- `target` and `group` blocks; a block's attributes can be read from others
  (`target.base.tags`); blocks of one name are merged in file order.
- `matrix = { key = [values] }` makes one target per combination, each named by `name`; the
  block's own name becomes a group of them.

Values are evaluated lazily, each once, with cycles reported by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyarch.bake.definition import (
    BakeError,
    Config,
    Group,
    Target,
    csv_fields,
    entries_from,
    valid_target_name,
)
from polyarch.bake.evaluate import (
    ChildScope,
    EvalError,
    Function,
    Scope,
    evaluate,
    to_bool,
    to_list,
    to_number,
    to_string,
    type_name,
)
from polyarch.bake.functions import Environment, standard_library
from polyarch.bake.hcl import (
    Attribute,
    Block,
    Body,
    Call,
    Expr,
    HclError,
    Lit,
    ObjectExpr,
    TupleExpr,
    Var,
    parse_expression,
)
from polyarch.units import parse_bool

TARGET_FIELDS: dict[str, str] = {
    "description": "string", "inherits": "list", "annotations": "list", "attest": "entries",
    "context": "string", "contexts": "map", "dockerfile": "string",
    "dockerfile-inline": "string", "args": "map", "labels": "map", "tags": "list",
    "cache-from": "entries", "cache-to": "entries", "target": "string", "secret": "entries",
    "ssh": "entries", "platforms": "list", "output": "entries", "pull": "bool",
    "no-cache": "bool", "network": "string", "no-cache-filter": "list", "shm-size": "string",
    "ulimits": "list", "call": "string", "entitlements": "list", "extra-hosts": "map",
}  # fmt: skip
GROUP_FIELDS = {"description": "string", "targets": "list"}


@dataclass(frozen=True, slots=True)
class ParseOptions:
    lookup: Callable[[str], str | None]  # the environment (and --var), by name
    builtins: Mapping[str, str] = field(default_factory=dict)  # BAKE_CMD_CONTEXT, ...
    env: Environment | None = None


@dataclass(frozen=True, slots=True)
class SourceFile:
    name: str  # as given (for messages)
    body: Body
    directory: str  # where relative paths of its targets start


@dataclass
class Parsed:
    config: Config
    variables: dict[str, Any]  # every variable, evaluated (for --list variables)
    descriptions: dict[str, str]


def json_body(data: Any, filename: str) -> Body:
    """A JSON bake file as HCL reads JSON: blocks by their known types, strings as
    templates."""
    if not isinstance(data, dict):
        raise BakeError(f"{filename}: a bake file in JSON is an object")
    attributes: dict[str, Attribute] = {}
    blocks: list[Block] = []
    for key, value in data.items():
        if key in ("variable", "target", "group", "function") and isinstance(value, dict):
            for label, content in value.items():
                if not isinstance(content, dict):
                    raise BakeError(f"{filename}: {key} {label!r} must be an object")
                blocks.append(Block(key, (label,), _json_block_body(key, content, filename), 0))
        else:
            attributes[key] = Attribute(key, _json_expr(value, filename), 0)
    return Body(attributes, tuple(blocks))


def _json_block_body(kind: str, content: Mapping[str, Any], filename: str) -> Body:
    attributes: dict[str, Attribute] = {}
    blocks: list[Block] = []
    for key, value in content.items():
        if kind == "variable" and key == "validation":
            for item in value if isinstance(value, list) else [value]:
                blocks.append(Block("validation", (), _json_block_body("validation", item,
                                                                        filename), 0))  # fmt: skip
            continue
        if kind == "variable" and key == "type" and isinstance(value, str):
            attributes[key] = Attribute(key, parse_expression(value, filename), 0)
            continue
        if kind == "function" and key in ("params", "variadic_params") and isinstance(
                value, list | str):  # fmt: skip
            names = value if isinstance(value, list) else [value]
            items = tuple(Var(str(n)) for n in names)
            expr: Expr = TupleExpr(items) if key == "params" else items[0]
            attributes[key] = Attribute(key, expr, 0)
            continue
        if kind == "function" and key == "result" and isinstance(value, str):
            attributes[key] = Attribute(key, _json_template(value, filename), 0)
            continue
        attributes[key] = Attribute(key, _json_expr(value, filename), 0)
    return Body(attributes, tuple(blocks))


def _json_expr(value: Any, filename: str) -> Expr:
    if isinstance(value, str):
        return _json_template(value, filename)
    if isinstance(value, list):
        return TupleExpr(tuple(_json_expr(v, filename) for v in value))
    if isinstance(value, dict):
        return ObjectExpr(tuple((Lit(k), _json_expr(v, filename)) for k, v in value.items()))
    return Lit(value)


def _json_template(text: str, filename: str) -> Expr:
    if "${" not in text and "%{" not in text:
        return Lit(text)
    from polyarch.bake.hcl import _as_quoted  # noqa: PLC0415

    return parse_expression(_as_quoted(text), filename)


# the type constraints of variables -----------------------------------------------------------

TypeSpec = Any  # "string" | "number" | "bool" | "any" | ("list"|"set"|"map", T) | ...


def type_constraint(expr: Expr | None, filename: str) -> TypeSpec | None:
    if expr is None:
        return None
    if isinstance(expr, Var) and expr.name in ("string", "number", "bool", "any"):
        return expr.name
    if isinstance(expr, Call) and expr.name in ("list", "set", "map") and len(expr.args) == 1:
        inner = type_constraint(expr.args[0], filename)
        return (expr.name, inner)
    if isinstance(expr, Call) and expr.name == "tuple" and len(expr.args) == 1 and isinstance(
            expr.args[0], TupleExpr):  # fmt: skip
        return ("tuple", [type_constraint(e, filename) for e in expr.args[0].items])
    if isinstance(expr, Call) and expr.name == "object" and len(expr.args) == 1 and isinstance(
            expr.args[0], ObjectExpr):  # fmt: skip
        fields = {}
        for key, value in expr.args[0].items:
            name = key.value if isinstance(key, Lit) else None
            if not isinstance(name, str):
                raise HclError(f"{filename}: an object type's attribute names must be names")
            fields[name] = type_constraint(value, filename)
        return ("object", fields)
    raise HclError(f"{filename}:{getattr(expr, 'line', 0)}: not a type: use string, number, "
                   "bool, any, list(T), set(T), map(T), tuple([...]) or object({...})")  # fmt: skip


def _type_text(spec: TypeSpec) -> str:
    if isinstance(spec, str):
        return spec
    kind: str = spec[0]
    inner = spec[1]
    if kind in ("list", "set", "map"):
        return f"{kind} of {_type_text(inner)}"
    return kind


def convert(value: Any, spec: TypeSpec, what: str) -> Any:
    """cty's conversion of a value to a type constraint."""
    if spec is None or spec == "any" or value is None:
        return value
    if spec == "string":
        return to_string(value, what)
    if spec == "number":
        return to_number(value, what)
    if spec == "bool":
        return to_bool(value, what)
    kind, inner = spec
    if kind in ("list", "set"):
        items = [convert(v, inner, what) for v in to_list(value, what)]
        return _dedup(items) if kind == "set" else items
    if kind == "map":
        if not isinstance(value, dict):
            raise EvalError(f"the {what} is a {type_name(value)} where a map is needed")
        return {k: convert(v, inner, what) for k, v in value.items()}
    if kind == "tuple":
        items = to_list(value, what)
        if len(items) != len(inner):
            raise EvalError(f"the {what} has {len(items)} elements, its type {len(inner)}")
        return [convert(v, t, what) for v, t in zip(items, inner, strict=True)]
    if kind == "object":
        if not isinstance(value, dict):
            raise EvalError(f"the {what} is a {type_name(value)} where an object is needed")
        missing = [k for k in inner if k not in value]
        if missing:
            raise EvalError(f"the {what} lacks the attribute {missing[0]!r}")
        return {k: convert(value[k], t, what) for k, t in inner.items()}
    return value


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _dedup(items: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for item in items:
        seen.setdefault(_hashable(item), item)
    return sorted(seen.values(), key=_hashable)


def _from_environment(name: str, text: str, spec: TypeSpec | None, default: Any,
                      is_json: bool) -> Any:  # fmt: skip
    """A variable's value from the environment, as buildx converts it."""
    how = "JSON" if is_json else "CSV"
    try:
        if spec is not None and spec != "any" and is_json:
            return convert(json.loads(text), spec, f"variable {name}")
        if isinstance(spec, tuple) and spec[0] in ("list", "set") and isinstance(spec[1], str):
            return convert([v.strip() for v in csv_fields(text)] if text else [], spec,
                           f"variable {name}")  # fmt: skip
        if isinstance(spec, str) and spec != "any":
            return convert(_primitive(text, spec, name), spec, f"variable {name}")
        if spec not in (None, "any"):
            raise BakeError(f"unsupported type {_type_text(spec)} for variable {name}")
    except (ValueError, EvalError) as exc:
        raise BakeError(f"failed to convert variable {name} from {how}: {exc}") from None
    if default is None:
        return text
    if isinstance(default, bool | int | float) and not isinstance(default, str):
        kind = "bool" if isinstance(default, bool) else "number"
        return _primitive(text, kind, name)
    if isinstance(default, str):
        return text
    raise BakeError(f"unsupported type {type_name(default)} for variable {name}")


def _primitive(text: str, kind: str, name: str) -> Any:
    if kind == "bool":
        parsed = parse_bool(text)
        if parsed is None:
            raise BakeError(f"failed to parse {name} as bool: {text!r}")
        return parsed
    if kind == "number":
        try:
            return to_number(text)
        except EvalError:
            raise BakeError(f"failed to parse {name} as number: {text!r}") from None
    return text


# the parser ----------------------------------------------------------------------------------


class _Blocks:
    """`target` / `group` as a value: `target.NAME.ATTRIBUTE` reads that block."""

    def __init__(self, parser: Parser, kind: str) -> None:
        self.parser, self.kind = parser, kind

    def attribute(self, name: str) -> Any:
        return _BlockValue(self.parser, self.kind, name)


class _BlockValue:
    def __init__(self, parser: Parser, kind: str, name: str) -> None:
        self.parser, self.kind, self.name = parser, kind, name

    def attribute(self, name: str) -> Any:
        return self.parser.block_attribute(self.kind, self.name, name)


@dataclass
class _Instance:
    """A block as evaluated once: its name, its scope (matrix values), its file."""

    block: Block
    name: str
    scope: Scope
    source: SourceFile
    values: dict[str, Any] = field(default_factory=dict)


class Parser:
    def __init__(self, files: Sequence[SourceFile], options: ParseOptions) -> None:
        self.files = files
        self.options = options
        env = options.env
        if env is None:
            import datetime  # noqa: PLC0415

            env = Environment(datetime.datetime.now(datetime.UTC), "")
        self.stdlib = standard_library(env)
        self.variables: dict[str, tuple[Block, SourceFile]] = {}
        self.attributes: dict[str, tuple[Attribute, SourceFile]] = {}
        self.functions: dict[str, tuple[Block, SourceFile]] = {}
        self.blocks: dict[str, list[tuple[Block, SourceFile]]] = {"target": [], "group": []}
        for source in files:
            for name, attribute in source.body.attributes.items():
                self.attributes[name] = (attribute, source)
            for block in source.body.blocks:
                if block.type == "variable":
                    self._labelled(block, source)
                    self.variables[block.labels[0]] = (block, source)
                elif block.type == "function":
                    self._labelled(block, source)
                    self.functions[block.labels[0]] = (block, source)
                elif block.type in ("target", "group"):
                    self._labelled(block, source)
                    label = block.labels[0]
                    if not valid_target_name(label):
                        raise BakeError(f"{source.name}:{block.line}: invalid {block.type} "
                                        f"name {label!r}: only \"[a-zA-Z0-9_-]+\" are "
                                        "allowed")  # fmt: skip
                    self.blocks[block.type].append((block, source))
                else:
                    raise BakeError(f"{source.name}:{block.line}: unsupported block type "
                                    f"{block.type!r} (bake takes variable, function, target "
                                    "and group)")  # fmt: skip
        self.values: dict[str, Any] = {}
        self._progress: set[str] = set()
        self._instances: dict[tuple[str, str], list[_Instance]] | None = None
        self._evaluating: set[tuple[str, str, str]] = set()
        self._user_functions: dict[str, Function] = {}

    @staticmethod
    def _labelled(block: Block, source: SourceFile) -> None:
        if len(block.labels) != 1:
            raise BakeError(f"{source.name}:{block.line}: a {block.type} block takes one "
                            "label (its name)")  # fmt: skip

    # the scope of the file ---------------------------------------------------------------

    def scope(self, source: SourceFile) -> Scope:
        return _FileScope(self, source.name)

    def lookup(self, name: str, line: int, filename: str) -> Any:
        if name in ("target", "group"):
            return _Blocks(self, name)
        return self.value(name, f"{filename}:{line}")

    def value(self, name: str, where: str = "") -> Any:
        if name in self.values:
            return self.values[name]
        if name in self._progress:
            raise BakeError(f"variable cycle not allowed for {name}")
        self._progress.add(name)
        try:
            result = self._resolve(name, where)
        finally:
            self._progress.discard(name)
        self.values[name] = result
        return result

    def _resolve(self, name: str, where: str) -> Any:
        if name in self.options.builtins:
            return self.options.builtins[name]
        if name not in self.attributes and name not in self.variables:
            at = f"{where}: " if where else ""
            raise BakeError(f'{at}variable "{name}" does not exist')
        default: Any = None
        spec: TypeSpec | None = None
        if name in self.attributes:  # a top-level NAME = ... (over a variable's default)
            attribute, source = self.attributes[name]
            default, has_default = evaluate(attribute.expr, self.scope(source)), True
            if name not in self.variables:
                return default  # not a variable: the environment does not override it
        block, source = self.variables[name]
        body = block.body.attributes
        if name not in self.attributes:
            spec = type_constraint(body["type"].expr if "type" in body else None, source.name)
            has_default = "default" in body
            if has_default:
                default = convert(evaluate(body["default"].expr, self.scope(source)), spec,
                                  f"default of variable {name}")  # fmt: skip
        text, from_json = self._override(name, favor_json=spec not in (None, "any"))
        if text is not None:
            value = _from_environment(name, text, spec, default if has_default else None,
                                      from_json)  # fmt: skip
        elif has_default:
            value = default
        else:
            value = None if spec is not None else ""  # typed: null; untyped: ""
        self._validate(name, value, block, source)
        return value

    def _override(self, name: str, *, favor_json: bool) -> tuple[str | None, bool]:
        text = self.options.lookup(name)
        if text is None or favor_json:
            json_name = f"{name}_JSON"
            if json_name not in self.variables and json_name not in self.options.builtins:
                json_text = self.options.lookup(json_name)
                if json_text is not None:
                    return json_text, True
        return text, False

    def _validate(self, name: str, value: Any, block: Block, source: SourceFile) -> None:
        for check in block.body.blocks:
            if check.type != "validation":
                continue
            condition = check.body.attributes.get("condition")
            if condition is None:
                continue
            scope = ChildScope(self.scope(source), {name: value})
            if not to_bool(evaluate(condition.expr, scope), "validation condition"):
                message = check.body.attributes.get("error_message")
                text = (to_string(evaluate(message.expr, scope)) if message is not None
                        else f"invalid value for variable {name}")  # fmt: skip
                raise BakeError(f"{source.name}:{check.line}: {text}")

    def function(self, name: str, line: int, filename: str) -> Function:
        if name in self._user_functions:
            return self._user_functions[name]
        if name in self.functions:
            block, source = self.functions[name]
            made = self._make_function(name, block, source)
            self._user_functions[name] = made
            return made
        if name in self.stdlib:
            return self.stdlib[name]
        raise BakeError(f'{filename}:{line}: function "{name}" does not exist')

    def _make_function(self, name: str, block: Block, source: SourceFile) -> Function:
        body = block.body.attributes
        if "result" not in body:
            raise BakeError(f"{source.name}:{block.line}: empty result not allowed for {name}")
        if "params" not in body:
            raise BakeError(f"{source.name}:{block.line}: empty params not allowed for {name}")
        params_expr = body["params"].expr
        if not isinstance(params_expr, TupleExpr) or not all(
                isinstance(p, Var) for p in params_expr.items):  # fmt: skip
            raise BakeError(f"{source.name}:{block.line}: each parameter name must be an "
                            "identifier")  # fmt: skip
        params = [p.name for p in params_expr.items if isinstance(p, Var)]
        variadic = body.get("variadic_params")
        rest = (
            variadic.expr.name if variadic is not None and isinstance(variadic.expr, Var) else None
        )
        result = body["result"].expr
        parser = self

        def call(*args: Any) -> Any:
            if len(args) < len(params) or (rest is None and len(args) > len(params)):
                raise EvalError(f"{name}() takes {len(params)} arguments, got {len(args)}")
            names = dict(zip(params, args, strict=False))
            if rest is not None:
                names[rest] = list(args[len(params) :])
            return evaluate(result, ChildScope(parser.scope(source), names))

        return call

    # blocks ------------------------------------------------------------------------------

    def instances(self) -> dict[tuple[str, str], list[_Instance]]:
        """Every block as evaluated (matrix expanded), by (type, label)."""
        if self._instances is not None:
            return self._instances
        self._instances = {}
        for kind, blocks in self.blocks.items():
            for block, source in blocks:
                made = self._expand(kind, block, source)
                self._instances.setdefault((kind, block.labels[0]), []).extend(made)
        return self._instances

    def _expand(self, kind: str, block: Block, source: SourceFile) -> list[_Instance]:
        attributes = block.body.attributes
        base = self.scope(source)
        if "matrix" not in attributes:
            if "name" in attributes:
                raise BakeError(f"{source.name}:{block.line}: name requires matrix")
            return [_Instance(block, block.labels[0], base, source)]
        if kind == "group":
            raise BakeError(f"{source.name}:{block.line}: matrix is not supported for groups")
        matrix = evaluate(attributes["matrix"].expr, base)
        if not isinstance(matrix, dict):
            raise BakeError(f"{source.name}:{block.line}: matrix must be a map")
        combos: list[dict[str, Any]] = [{}]
        for key in sorted(matrix):
            values = matrix[key]
            if not isinstance(values, list):
                raise BakeError(f"{source.name}:{block.line}: matrix values must be a list")
            combos = [{**combo, key: value} for value in values for combo in combos]
        out: list[_Instance] = []
        for combo in combos:
            scope = ChildScope(base, combo)
            name = block.labels[0]
            if "name" in attributes:
                name = to_string(evaluate(attributes["name"].expr, scope), "name")
            if not valid_target_name(name):
                raise BakeError(f"{source.name}:{block.line}: invalid target name {name!r}: "
                                "only \"[a-zA-Z0-9_-]+\" are allowed")  # fmt: skip
            if any(i.name == name for i in out):
                raise BakeError(f"{source.name}:{block.line}: the matrix of {block.labels[0]!r} "
                                f"makes the name {name!r} more than once")  # fmt: skip
            out.append(_Instance(block, name, scope, source))
        return out

    def block_attribute(self, kind: str, name: str, attribute: str) -> Any:
        """`target.NAME.ATTRIBUTE`: NAME as the block is finally named (a matrix block by its
        `name`, not its label)."""
        instances = [i for (k, _label), items in self.instances().items() if k == kind
                     for i in items if i.name == name]  # fmt: skip
        if not instances:
            raise BakeError(f"{kind} {name!r} does not exist")
        fields = TARGET_FIELDS if kind == "target" else GROUP_FIELDS
        value: Any = None
        for instance in instances:
            if attribute in instance.block.body.attributes:
                value = self._attribute(instance, attribute, fields)
            elif attribute not in fields and attribute != "name":
                raise BakeError(f"{kind} {name!r} has no attribute {attribute!r}")
        return value

    def _attribute(self, instance: _Instance, name: str, fields: Mapping[str, str]) -> Any:
        if name in instance.values:
            return instance.values[name]
        key = (instance.block.type, instance.name, name)
        if key in self._evaluating:
            raise BakeError(f"reference cycle not allowed for {instance.block.type}."
                            f"{instance.name}.{name}")  # fmt: skip
        self._evaluating.add(key)
        try:
            attribute = instance.block.body.attributes[name]
            raw = evaluate(attribute.expr, instance.scope)
            value = _typed(raw, fields.get(name, "any"), f"{name} of {instance.name}",
                           f"{instance.source.name}:{attribute.line}")  # fmt: skip
        finally:
            self._evaluating.discard(key)
        instance.values[name] = value
        return value

    def parse(self) -> Parsed:
        for name in self.functions:  # each is checked, called or not
            self.function(name, 0, "")
        config = Config()
        renamed: dict[str, list[str]] = {}
        for (kind, label), instances in self.instances().items():
            for instance in instances:
                fields = TARGET_FIELDS if kind == "target" else GROUP_FIELDS
                for name, attribute in instance.block.body.attributes.items():
                    if name in ("matrix", "name"):
                        continue
                    if name not in fields:
                        raise BakeError(f"{instance.source.name}:{attribute.line}: unsupported "
                                        f"argument {name!r} in {kind} {label!r}")  # fmt: skip
                    self._attribute(instance, name, fields)
                if kind == "group":
                    values = instance.values
                    group = Group(instance.name, values.get("targets") or [],
                                  values.get("description") or "")  # fmt: skip
                    config.add(Config(groups=[group]))
                else:
                    config.add(Config(targets=[_target(instance)]))
                    if "matrix" in instance.block.body.attributes:
                        renamed.setdefault(label, []).append(instance.name)
        for label, made in renamed.items():
            unique = list(dict.fromkeys(made))
            if unique != [label]:
                config.add(Config(groups=[Group(label, unique)]))
        variables = {}
        descriptions = {}
        for name, (block, _source) in self.variables.items():
            variables[name] = self.value(name)
            description = block.body.attributes.get("description")
            if description is not None:
                descriptions[name] = to_string(evaluate(description.expr,
                                                        self.scope(_source)))  # fmt: skip
        return Parsed(config, variables, descriptions)


class _FileScope:
    def __init__(self, parser: Parser, filename: str) -> None:
        self.parser = parser
        self.filename = filename

    def lookup(self, name: str, line: int) -> Any:
        return self.parser.lookup(name, line, self.filename)

    def function(self, name: str, line: int) -> Function:
        return self.parser.function(name, line, self.filename)


def _typed(value: Any, kind: str, what: str, where: str) -> Any:
    """An attribute's value as its field wants it (None: not set)."""
    if value is None:
        return None
    try:
        if kind == "string":
            return to_string(value, what)
        if kind == "bool":
            return to_bool(value, what)
        if kind == "list":
            return [to_string(v, what) for v in to_list(value, what) if v is not None]
        if kind == "map":
            if not isinstance(value, dict):
                raise EvalError(f"{what} must be a map, not a {type_name(value)}")
            return {k: (None if v is None else to_string(v, what)) for k, v in value.items()}
        if kind == "entries":
            name = what.split(maxsplit=1)[0]
            return entries_from(value if isinstance(value, list) else [value], name)
    except EvalError as exc:
        raise BakeError(f"{where}: {exc}") from None
    return value


def _target(instance: _Instance) -> Target:
    values = instance.values
    target = Target(instance.name, source=instance.source.directory)
    target.description = values.get("description") or ""
    target.inherits = values.get("inherits") or []
    for key, value in values.items():
        if key in ("description", "inherits") or value is None:
            continue
        setattr(target, key.replace("-", "_"), value)
    return target
