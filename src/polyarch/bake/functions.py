"""The functions a bake file may call: go-cty's standard library and buildx's own (the list of
buildx's bake/hclparser/stdlib.go), with cty's semantics. Pure: the clock and the home
directory are given (`Environment`), so the same inputs give the same values.

Not provided (each is an error naming it): bcrypt, rsadecrypt, byteslen, bytesslice and
convert (cty's bytes and type-expression machinery).
"""

from __future__ import annotations

import base64
import csv
import datetime
import hashlib
import io
import ipaddress
import json
import math
import posixpath
import re
import unicodedata
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from polyarch.bake.evaluate import (
    EvalError,
    equal,
    number_text,
    to_bool,
    to_list,
    to_number,
    to_string,
    type_name,
)


@dataclass(frozen=True, slots=True)
class Environment:
    now: datetime.datetime  # timestamp(): UTC
    home: str  # homedir()


def _str(value: Any) -> str:
    return to_string(value, "argument")


def _num(value: Any) -> int | float:
    return to_number(value, "argument")


def _int(value: Any) -> int:
    number = _num(value)
    if not float(number).is_integer():
        raise EvalError(f"{number_text(number)} is not a whole number")
    return int(number)


def _list(value: Any) -> list[Any]:
    if value is None:
        raise EvalError("the argument is null where a list is needed")
    return to_list(value, "argument")


def _map(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EvalError(f"the argument is a {type_name(value)} where a map is needed")
    return value


def _num_result(value: float) -> int | float:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# strings -------------------------------------------------------------------------------------


def _chomp(s: Any) -> str:
    return re.sub(r"(?:\r\n|\r|\n)+$", "", _str(s))


def _indent(spaces: Any, s: Any) -> str:
    pad = " " * _int(spaces)
    return _str(s).replace("\n", "\n" + pad)


def _substr(s: Any, offset: Any, length: Any) -> str:
    text = _graphemes(_str(s))
    start, count = _int(offset), _int(length)
    if start < 0:
        start = max(0, len(text) + start)
    if start > len(text):
        raise EvalError("offset is greater than the length of the string")
    end = len(text) if count < 0 else min(len(text), start + count)
    return "".join(text[start:end])


def _graphemes(text: str) -> list[str]:
    """Characters as people count them: a letter and its combining marks together."""
    out: list[str] = []
    for char in text:
        if out and unicodedata.combining(char):
            out[-1] += char
        else:
            out.append(char)
    return out


def _title(s: Any) -> str:
    return re.sub(r"(^|[^\w'])(\w)", lambda m: m.group(1) + m.group(2).upper(), _str(s))


def _trim(s: Any, cutset: Any) -> str:
    return _str(s).strip(_str(cutset))


def _go_regex(pattern: str) -> re.Pattern[str]:
    """A Go RE2 pattern in Python's dialect: named groups `(?P<n>` are the same; `\\z` is
    Python's `\\Z`."""
    try:
        return re.compile(pattern.replace(r"\z", r"\Z"))
    except re.error as exc:
        raise EvalError(f"invalid regular expression {pattern!r}: {exc}") from None


def _regex_value(match: re.Match[str], compiled: re.Pattern[str]) -> Any:
    if compiled.groupindex:
        return {name: match.group(name) or "" for name in compiled.groupindex}
    if compiled.groups:
        return [g or "" for g in match.groups()]
    return match.group(0)


def _regex(pattern: Any, s: Any) -> Any:
    compiled = _go_regex(_str(pattern))
    match = compiled.search(_str(s))
    if match is None:
        raise EvalError("pattern did not match any part of the given string")
    return _regex_value(match, compiled)


def _regexall(pattern: Any, s: Any) -> list[Any]:
    compiled = _go_regex(_str(pattern))
    return [_regex_value(m, compiled) for m in compiled.finditer(_str(s))]


def _regex_replace(s: Any, pattern: Any, replacement: Any) -> str:
    compiled = _go_regex(_str(pattern))
    # Go's $1 / ${name} in the replacement, Python's \g<1>
    template = re.sub(r"\$(\d+|\{(\w+)\})",
                      lambda m: f"\\g<{m.group(2) or m.group(1)}>", _str(replacement))  # fmt: skip
    return compiled.sub(template, _str(s))


_FORMAT = re.compile(r"%(?:\[(\d+)\])?([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*))?([a-zA-Z%])")


def _format(fmt: Any, *args: Any) -> str:
    """Go's fmt verbs as cty's format(): %v %s %q %d %f %e %g %x %X %o %b %t %%, with flags,
    width, precision and explicit argument indexes."""
    text = _str(fmt)
    out: list[str] = []
    position = 0
    argument = 0
    for match in _FORMAT.finditer(text):
        out.append(text[position : match.start()])
        position = match.end()
        index, flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if index is not None:
            argument = int(index) - 1
        if argument >= len(args):
            raise EvalError(f"not enough arguments for format string {text!r}")
        value = args[argument]
        argument += 1
        out.append(_format_one(value, flags, width, precision, verb))
    out.append(text[position:])
    if argument < len(args) and not any(m.group(1) for m in _FORMAT.finditer(text)):
        raise EvalError(f"too many arguments for format string {text!r}")
    return "".join(out)


def _format_one(value: Any, flags: str, width: str | None, precision: str | None,
                verb: str) -> str:  # fmt: skip
    if verb in "vs":
        body = (json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict)
                else "null" if value is None else _str(value))  # fmt: skip
        if precision is not None:
            body = body[: int(precision)]
    elif verb == "q":
        body = json.dumps(_str(value))
    elif verb == "t":
        body = "true" if to_bool(value, "argument") else "false"
    elif verb in "dxXob":
        number = _int(value)
        spec = {"d": "d", "x": "x", "X": "X", "o": "o", "b": "b"}[verb]
        body = format(number, ("+" if "+" in flags else "") + spec)
    elif verb in "feEgG":
        real = float(_num(value))
        digits = int(precision) if precision is not None else (6 if verb in "feE" else -1)
        if verb in "gG" and digits < 0:
            body = number_text(real)
        else:
            body = format(real, ("+" if "+" in flags else "") + f".{digits}{verb}")
    else:
        raise EvalError(f"unsupported format verb %{verb}")
    if width is not None and width != "*":
        size = int(width)
        if "-" in flags:
            body = body.ljust(size)
        elif "0" in flags and verb not in "svq":
            sign = body[0] if body[:1] in "+-" else ""
            body = sign + body[len(sign) :].rjust(size - len(sign), "0")
        else:
            body = body.rjust(size)
    return body


def _formatlist(fmt: Any, *args: Any) -> list[str]:
    lengths = {len(a) for a in args if isinstance(a, list)}
    if len(lengths) > 1:
        raise EvalError("all list arguments must have the same length")
    count = lengths.pop() if lengths else 1
    return [_format(fmt, *[a[i] if isinstance(a, list) else a for a in args])
            for i in range(count)]  # fmt: skip


def _sanitize(name: Any) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", _str(name))


# collections ---------------------------------------------------------------------------------


def _length(value: Any) -> int:
    if isinstance(value, str):
        return len(_graphemes(value))
    if isinstance(value, list | dict):
        return len(value)
    raise EvalError(f"a {type_name(value)} has no length")


def _element(values: Any, index: Any) -> Any:
    items = _list(values)
    if not items:
        raise EvalError("cannot use element function with an empty list")
    position = _int(index)
    if position < 0:
        raise EvalError("cannot use element function with a negative index")
    return items[position % len(items)]


def _index(collection: Any, key: Any) -> Any:
    if isinstance(collection, list):
        position = _int(key)
        if not 0 <= position < len(collection):
            raise EvalError("the index is out of range")
        return collection[position]
    mapping = _map(collection)
    name = _str(key)
    if name not in mapping:
        raise EvalError(f"the map has no key {name!r}")
    return mapping[name]


def _indexof(values: Any, value: Any) -> int:
    items = _list(values)
    if not items:
        raise EvalError("cannot search an empty list")
    for position, item in enumerate(items):
        if equal(item, value):
            return position
    raise EvalError("item not found")


def _hasindex(collection: Any, key: Any) -> bool:
    if isinstance(collection, list):
        try:
            return 0 <= _int(key) < len(collection)
        except EvalError:
            return False
    return _str(key) in _map(collection)


def _lookup(mapping: Any, key: Any, *default: Any) -> Any:
    values = _map(mapping)
    name = _str(key)
    if name in values:
        return values[name]
    if default:
        return default[0]
    raise EvalError(f"the map has no key {name!r} (and no default was given)")


def _merge(*maps: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mapping in maps:
        if mapping is not None:
            out.update(_map(mapping))
    return out


def _flatten(values: Any) -> list[Any]:
    out: list[Any] = []
    for item in _list(values):
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _distinct(values: Any) -> list[Any]:
    out: list[Any] = []
    for item in _list(values):
        if not any(equal(item, seen) for seen in out):
            out.append(item)
    return out


def _contains(values: Any, value: Any) -> bool:
    return any(equal(item, value) for item in _list(values))


def _chunklist(values: Any, size: Any) -> list[list[Any]]:
    items, count = _list(values), _int(size)
    if count < 0:
        raise EvalError("the size must not be negative")
    if count == 0:
        return [items]
    return [items[i : i + count] for i in range(0, len(items), count)]


def _slice(values: Any, start: Any, end: Any) -> list[Any]:
    items = _list(values)
    first, last = _int(start), _int(end)
    if first < 0 or last > len(items) or first > last:
        raise EvalError(f"invalid slice [{first}:{last}] of a list of {len(items)}")
    return items[first:last]


def _range(*args: Any) -> list[int | float]:
    numbers = [_num(a) for a in args]
    if not 1 <= len(numbers) <= 3:
        raise EvalError("range takes one to three arguments")
    start: int | float = 0
    step: int | float = 1
    if len(numbers) == 1:
        limit = numbers[0]
    elif len(numbers) == 2:
        start, limit = numbers
    else:
        start, limit, step = numbers
    if step == 0:
        raise EvalError("the step must not be zero")
    out: list[int | float] = []
    value = start
    while (value < limit) if step > 0 else (value > limit):
        out.append(_num_result(value) if isinstance(value, float) else value)
        value += step
        if len(out) > 1024:
            raise EvalError("more than 1024 values")
    return out


def _sort(values: Any) -> list[str]:
    return sorted(_str(v) for v in _list(values))


def _keys(mapping: Any) -> list[str]:
    return sorted(_map(mapping))


def _values(mapping: Any) -> list[Any]:
    values = _map(mapping)
    return [values[k] for k in sorted(values)]


def _zipmap(keys: Any, values: Any) -> dict[str, Any]:
    names, items = _list(keys), _list(values)
    if len(names) != len(items):
        raise EvalError("the keys and values lists must have the same length")
    return {_str(k): v for k, v in zip(names, items, strict=True)}


def _coalesce(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    raise EvalError("no non-null arguments")


def _coalescelist(*lists: Any) -> list[Any]:
    for value in lists:
        if _list(value):
            return _list(value)
    raise EvalError("no non-null arguments")


def _compact(values: Any) -> list[str]:
    return [_str(v) for v in _list(values) if v is not None and _str(v) != ""]


def _concat(*lists: Any) -> list[Any]:
    out: list[Any] = []
    for value in lists:
        out.extend(_list(value))
    return out


def _set(values: Any) -> list[Any]:
    return _distinct(values)


def _setproduct(*lists: Any) -> list[list[Any]]:
    result: list[list[Any]] = [[]]
    for value in lists:
        result = [[*prefix, item] for prefix in result for item in _list(value)]
    return result


def _setsubtract(a: Any, b: Any) -> list[Any]:
    return [x for x in _set(a) if not _contains(b, x)]


def _setintersection(first: Any, *others: Any) -> list[Any]:
    return [x for x in _set(first) if all(_contains(o, x) for o in others)]


def _setunion(*lists: Any) -> list[Any]:
    return _distinct(_concat(*lists))


def _setsymmetricdifference(*lists: Any) -> list[Any]:
    out: list[Any] = []
    for value in lists:
        for item in _set(value):
            if _contains(out, item):
                out = [x for x in out if not equal(x, item)]
            else:
                out.append(item)
    return out


def _csvdecode(s: Any) -> list[dict[str, str]]:
    rows = list(csv.reader(io.StringIO(_str(s))))
    if not rows:
        raise EvalError("missing header line")
    header, *records = rows
    out = []
    for record in records:
        if len(record) != len(header):
            raise EvalError("a record has another number of fields than the header")
        out.append(dict(zip(header, record, strict=True)))
    return out


# numbers -------------------------------------------------------------------------------------


def _max(*numbers: Any) -> int | float:
    if not numbers:
        raise EvalError("must pass at least one number")
    return max(_num(n) for n in numbers)


def _min(*numbers: Any) -> int | float:
    if not numbers:
        raise EvalError("must pass at least one number")
    return min(_num(n) for n in numbers)


def _parseint(s: Any, base: Any) -> int:
    radix = _int(base)
    if not 2 <= radix <= 62:
        raise EvalError("base must be a whole number between 2 and 62 inclusive")
    try:
        return int(_str(s), radix)
    except ValueError:
        raise EvalError(f"cannot parse {_str(s)!r} as a base {radix} integer") from None


def _log(number: Any, base: Any) -> float:
    return math.log(_num(number), _num(base))


def _divide(a: Any, b: Any) -> int | float:
    if _num(b) == 0:
        raise EvalError("division by zero")
    return _num_result(_num(a) / _num(b))


def _modulo(a: Any, b: Any) -> int | float:
    x, y = _num(a), _num(b)
    if y == 0:
        raise EvalError("modulo by zero")
    return x - y * int(x / y)


def _int_of(value: Any) -> int:
    return int(_num(value))  # toward zero, as cty's int()


# time ----------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime.datetime:
    text = _str(value)
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EvalError(f"not a valid RFC 3339 timestamp: {text!r}") from None


_DATE_TOKENS = re.compile(r"'[^']*'|YYYY|YY|MMMM|MMM|MM|M|DD|D|EEEE|EEE|hh|h|HH|H|mm|m|ss|s|"
                          r"ZZZZZ|ZZZZ|ZZZ|Z|AA|aa")  # fmt: skip


def _formatdate(spec: Any, timestamp: Any) -> str:
    moment = _parse_time(timestamp)
    offset = moment.utcoffset() or datetime.timedelta()
    minutes = int(offset.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)

    def token(match: re.Match[str]) -> str:
        t = match.group(0)
        if t.startswith("'"):
            return t[1:-1] or "'"
        values = {
            "YYYY": f"{moment.year:04d}", "YY": f"{moment.year % 100:02d}",
            "MMMM": moment.strftime("%B"), "MMM": moment.strftime("%b"),
            "MM": f"{moment.month:02d}", "M": str(moment.month),
            "DD": f"{moment.day:02d}", "D": str(moment.day),
            "EEEE": moment.strftime("%A"), "EEE": moment.strftime("%a"),
            "hh": f"{moment.hour:02d}", "h": str(moment.hour),
            "HH": f"{(moment.hour % 12) or 12:02d}", "H": str((moment.hour % 12) or 12),
            "mm": f"{moment.minute:02d}", "m": str(moment.minute),
            "ss": f"{moment.second:02d}", "s": str(moment.second),
            "ZZZZZ": f"{sign}{hours:02d}:{rest:02d}", "ZZZZ": f"{sign}{hours:02d}{rest:02d}",
            "ZZZ": "UTC" if minutes == 0 else f"{sign}{hours:02d}{rest:02d}",
            "Z": "Z" if minutes == 0 else f"{sign}{hours:02d}:{rest:02d}",
            "AA": "AM" if moment.hour < 12 else "PM", "aa": "am" if moment.hour < 12 else "pm",
        }  # fmt: skip
        return values[t]

    return _DATE_TOKENS.sub(token, _str(spec))


def _rfc3339(moment: datetime.datetime) -> str:
    if moment.utcoffset() == datetime.timedelta():
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.isoformat(timespec="seconds")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _timeadd(timestamp: Any, duration: Any) -> str:
    """Go's time.ParseDuration units: `1h30m`, `-10s`, `1.5h`."""
    text = _str(duration)
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    parts = _DURATION.findall(body)
    if not parts or "".join(a + b for a, b in parts) != body:
        raise EvalError(f"invalid duration {text!r}")
    seconds = sign * sum(float(value) * _UNITS[unit] for value, unit in parts)
    return _rfc3339(_parse_time(timestamp) + datetime.timedelta(seconds=seconds))


def _unix(value: Any) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(_int(value), datetime.UTC)


def _formattimestamp(spec: Any, moment: Any) -> str:
    if isinstance(moment, int | float) and not isinstance(moment, bool):
        when = _unix(moment)
    else:
        when = _parse_time(moment)
    if _str(spec) == "X":
        return str(int(when.timestamp()))
    return _formatdate(spec, _rfc3339(when))


def _unixtimestampparse(value: Any) -> dict[str, Any]:
    when = _unix(value)
    iso_year, iso_week, _day = when.isocalendar()
    return {
        "year": when.year, "year_day": when.timetuple().tm_yday, "day": when.day,
        "month": when.month, "month_name": when.strftime("%B"),
        "weekday": (when.weekday() + 1) % 7, "weekday_name": when.strftime("%A"),
        "hour": when.hour, "minute": when.minute, "second": when.second,
        "rfc3339": _rfc3339(when), "iso_year": iso_year, "iso_week": iso_week,
    }  # fmt: skip


# network -------------------------------------------------------------------------------------


def _cidrhost(prefix: Any, host: Any) -> str:
    network = ipaddress.ip_network(_str(prefix), strict=False)
    number = _int(host)
    address = (network.broadcast_address + 1 + number) if number < 0 else (
        network.network_address + number)  # fmt: skip
    if address not in network:
        raise EvalError(f"prefix {prefix} has no host {number}")
    return str(address)


def _cidrnetmask(prefix: Any) -> str:
    network = ipaddress.ip_network(_str(prefix), strict=False)
    if network.version != 4:
        raise EvalError("only IPv4 networks have a netmask")
    return str(network.netmask)


def _cidrsubnet(prefix: Any, newbits: Any, netnum: Any) -> str:
    network = ipaddress.ip_network(_str(prefix), strict=False)
    subnets = list(network.subnets(prefixlen_diff=_int(newbits)))
    number = _int(netnum)
    if not 0 <= number < len(subnets):
        raise EvalError(f"prefix extension of {newbits} bits has no subnet number {number}")
    return str(subnets[number])


def _cidrsubnets(prefix: Any, *newbits: Any) -> list[str]:
    network = ipaddress.ip_network(_str(prefix), strict=False)
    out: list[str] = []
    current = int(network.network_address)
    for bits in newbits:
        length = network.prefixlen + _int(bits)
        size = 1 << (network.max_prefixlen - length)
        current = (current + size - 1) // size * size
        subnet = ipaddress.ip_network((current, length))
        if not subnet.subnet_of(network):  # type: ignore[arg-type]
            raise EvalError("not enough remaining address space for a subnet")
        out.append(str(subnet))
        current += size
    return out


# semver --------------------------------------------------------------------------------------


_SEMVER = re.compile(
    r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$"
)


def _version(text: str) -> tuple[int, int, int, str]:
    match = _SEMVER.match(text.strip())
    if match is None:
        raise EvalError(f"invalid semantic version {text!r}")
    major, minor, patch, pre = match.groups()
    return int(major), int(minor or 0), int(patch or 0), pre or ""


def _compare_versions(a: tuple[int, int, int, str], b: tuple[int, int, int, str]) -> int:
    if a[:3] != b[:3]:
        return -1 if a[:3] < b[:3] else 1
    if a[3] == b[3]:
        return 0
    if not a[3] or not b[3]:
        return 1 if not a[3] else -1  # a release is after its pre-releases
    return -1 if a[3] < b[3] else 1


def _semvercmp(version: Any, constraint: Any) -> bool:
    """Masterminds/semver constraints: `>=1.2, <2`, `~1.2`, `^1.2`, `1.2.x`, `||`."""
    current = _version(_str(version))
    for alternative in _str(constraint).split("||"):
        parts = _CONSTRAINT.findall(alternative)
        if not parts:
            raise EvalError(f"invalid constraint {_str(constraint)!r}")
        if all(_satisfies(current, op + text) for op, text in parts):
            return True
    return False


_CONSTRAINT = re.compile(r"(>=|<=|!=|=|>|<|~|\^)?\s*(v?[0-9xX*][0-9A-Za-z.*+-]*)")


def _satisfies(current: tuple[int, int, int, str], rule: str) -> bool:
    match = re.match(r"^(>=|<=|!=|=|>|<|~|\^)?\s*(.+)$", rule)
    if match is None:
        raise EvalError(f"invalid constraint {rule!r}")
    op, text = match.group(1) or "=", match.group(2)
    wild = re.match(r"^v?(\d+)(?:\.(\d+|x|X|\*))?(?:\.(x|X|\*))?$", text)
    if op == "=" and wild and (wild.group(2) in (None, "x", "X", "*") or wild.group(3)):
        major = int(wild.group(1))
        if wild.group(2) in (None, "x", "X", "*"):
            return current[0] == major and not current[3]
        return current[:2] == (major, int(wild.group(2))) and not current[3]
    target = _version(text.replace("x", "0").replace("*", "0"))
    order = _compare_versions(current, target)
    if op == "~":
        return order >= 0 and current[:2] == target[:2]
    if op == "^":
        if target[0] > 0:
            return order >= 0 and current[0] == target[0]
        return order >= 0 and current[:2] == target[:2]
    return {"=": order == 0, "!=": order != 0, ">": order > 0, "<": order < 0,
            ">=": order >= 0, "<=": order <= 0}[op]  # fmt: skip


# the table -----------------------------------------------------------------------------------


def _basename(path: Any) -> str:
    """Go's path.Base: the last element, trailing slashes removed; "/" and "." as Go."""
    text = _str(path)
    if not text:
        return "."
    stripped = text.rstrip("/")
    return posixpath.basename(stripped) if stripped else "/"


def _dirname(path: Any) -> str:
    """Go's path.Dir: all but the last element, cleaned."""
    text = _str(path)
    head = posixpath.dirname(text)
    return posixpath.normpath(head) if head else "."


def _not_provided(name: str) -> Callable[..., Any]:
    def fail(*_args: Any) -> Any:
        raise EvalError(f"{name}() is not provided by polyarch's bake")

    return fail


def standard_library(env: Environment) -> dict[str, Callable[..., Any]]:
    """Every function by its name."""
    return {
        "absolute": lambda n: abs(_num(n)),
        "add": lambda a, b: _num(a) + _num(b),
        "and": lambda a, b: to_bool(a) and to_bool(b),
        "base64decode": lambda s: base64.b64decode(_str(s), validate=True).decode("utf-8"),
        "base64encode": lambda s: base64.b64encode(_str(s).encode()).decode("ascii"),
        "basename": _basename,
        "bcrypt": _not_provided("bcrypt"),
        "byteslen": _not_provided("byteslen"),
        "bytesslice": _not_provided("bytesslice"),
        "ceil": lambda n: math.ceil(_num(n)),
        "chomp": _chomp,
        "chunklist": _chunklist,
        "cidrhost": _cidrhost,
        "cidrnetmask": _cidrnetmask,
        "cidrsubnet": _cidrsubnet,
        "cidrsubnets": _cidrsubnets,
        "coalesce": _coalesce,
        "coalescelist": _coalescelist,
        "compact": _compact,
        "concat": _concat,
        "contains": _contains,
        "convert": _not_provided("convert"),
        "csvdecode": _csvdecode,
        "dirname": _dirname,
        "distinct": _distinct,
        "divide": _divide,
        "element": _element,
        "equal": equal,
        "flatten": _flatten,
        "floor": lambda n: math.floor(_num(n)),
        "format": _format,
        "formatdate": _formatdate,
        "formattimestamp": _formattimestamp,
        "formatlist": _formatlist,
        "greaterthan": lambda a, b: _num(a) > _num(b),
        "greaterthanorequalto": lambda a, b: _num(a) >= _num(b),
        "hasindex": _hasindex,
        "homedir": lambda: env.home,
        "indent": _indent,
        "index": _index,
        "indexof": _indexof,
        "int": _int_of,
        "join": lambda sep, *lists: _str(sep).join(_str(v) for lst in lists for v in _list(lst)),
        "jsondecode": lambda s: json.loads(_str(s)),
        "jsonencode": lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False),
        "keys": _keys,
        "length": _length,
        "lessthan": lambda a, b: _num(a) < _num(b),
        "lessthanorequalto": lambda a, b: _num(a) <= _num(b),
        "log": _log,
        "lookup": _lookup,
        "lower": lambda s: _str(s).lower(),
        "max": _max,
        "md5": lambda s: hashlib.md5(_str(s).encode(), usedforsecurity=False).hexdigest(),
        "merge": _merge,
        "min": _min,
        "modulo": _modulo,
        "multiply": lambda a, b: _num(a) * _num(b),
        "negate": lambda n: -_num(n),
        "not": lambda b: not to_bool(b),
        "notequal": lambda a, b: not equal(a, b),
        "or": lambda a, b: to_bool(a) or to_bool(b),
        "parseint": _parseint,
        "pow": lambda a, b: _num_result(float(_num(a)) ** _num(b)),
        "range": _range,
        "regex_replace": _regex_replace,
        "regex": _regex,
        "regexall": _regexall,
        "replace": lambda s, old, new: _str(s).replace(_str(old), _str(new)),
        "reverse": lambda s: "".join(reversed(_graphemes(_str(s)))),
        "reverselist": lambda v: list(reversed(_list(v))),
        "rsadecrypt": _not_provided("rsadecrypt"),
        "sanitize": _sanitize,
        "semvercmp": _semvercmp,
        "sethaselement": _contains,
        "setintersection": _setintersection,
        "setproduct": _setproduct,
        "setsubtract": _setsubtract,
        "setsymmetricdifference": _setsymmetricdifference,
        "setunion": _setunion,
        "sha1": lambda s: hashlib.sha1(_str(s).encode(), usedforsecurity=False).hexdigest(),
        "sha256": lambda s: hashlib.sha256(_str(s).encode()).hexdigest(),
        "sha512": lambda s: hashlib.sha512(_str(s).encode()).hexdigest(),
        "signum": lambda n: (_num(n) > 0) - (_num(n) < 0),
        "slice": _slice,
        "sort": _sort,
        "split": lambda sep, s: _str(s).split(_str(sep)),
        "strlen": lambda s: len(_graphemes(_str(s))),
        "substr": _substr,
        "subtract": lambda a, b: _num(a) - _num(b),
        "timeadd": _timeadd,
        "timestamp": lambda: _rfc3339(env.now.astimezone(datetime.UTC)),
        "title": _title,
        "trim": _trim,
        "trimprefix": lambda s, p: _str(s).removeprefix(_str(p)),
        "trimspace": lambda s: _str(s).strip(),
        "trimsuffix": lambda s, p: _str(s).removesuffix(_str(p)),
        "unixtimestampparse": _unixtimestampparse,
        "upper": lambda s: _str(s).upper(),
        "urlencode": lambda s: urllib.parse.quote(_str(s), safe=""),
        "uuidv4": lambda: str(uuid.uuid4()),
        "uuidv5": lambda ns, name: str(uuid.uuid5(_namespace(ns), _str(name))),
        "values": _values,
        "zipmap": _zipmap,
    }


def _namespace(value: Any) -> uuid.UUID:
    names: Mapping[str, uuid.UUID] = {
        "dns": uuid.NAMESPACE_DNS, "url": uuid.NAMESPACE_URL, "oid": uuid.NAMESPACE_OID,
        "x500": uuid.NAMESPACE_X500,
    }  # fmt: skip
    text = _str(value)
    if text in names:
        return names[text]
    try:
        return uuid.UUID(text)
    except ValueError:
        raise EvalError(f"{text!r} is not a UUID namespace") from None
