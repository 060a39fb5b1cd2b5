"""Typed configs from YAML: nested dataclasses, validated field by field.

``load_config(path, Cls)`` reads a YAML file and builds ``Cls`` (a dataclass, possibly
nested). Unknown keys, missing required keys and wrong types raise ``ConfigError``
naming the file, the line and the dotted field path, e.g.
``experiments/demo.yaml:12: field 'train.lr': expected float, got 'fast'``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from em_interp.errors import ConfigError, EmInterpError

T = TypeVar("T")


MAX_YAML_NODES = 200_000      # expanded node count (aliases counted at every use): no alias bombs
MAX_YAML_BYTES = 20_000_000   # raw size of one YAML file


def nearest_line(lines: dict[str, int], fieldpath: str) -> int | None:
    """Line of ``fieldpath`` in a ``read_yaml`` line index, else of its nearest enclosing field
    (``a.b[2].c`` -> ``a.b[2]`` -> ``a.b`` -> ``a``); the one rule every YAML error uses."""
    path = fieldpath
    while path:
        line = lines.get(path)
        if line is not None:
            return line
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _check_node_size(node: yaml.Node, path: Path, limit: int = MAX_YAML_NODES) -> None:
    """Refuse recursive aliases and documents whose alias expansion exceeds ``limit`` nodes."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError("recursive YAML alias (a node contains itself)", file=path,
                              line=n.start_mark.line + 1)
        active.add(key)
        total = 1
        if isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                raise ConfigError(f"YAML expands to more than {limit} nodes through aliases; refusing "
                                  "(alias bomb?)", file=path, line=child.start_mark.line + 1)
        active.discard(key)
        sizes[key] = total
        return total

    size(node)


def _line_index(node: yaml.Node, prefix: str = "", out: dict[str, int] | None = None) -> dict[str, int]:
    """Map dotted field paths to 1-based line numbers from a composed YAML node tree."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[path] = key_node.start_mark.line + 1
            _line_index(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out[path] = item.start_mark.line + 1
            _line_index(item, path, out)
    return out


def read_text_checked(path: str | Path, error: type[EmInterpError] = ConfigError, *,
                      max_bytes: int | None = None) -> str:
    """A file's UTF-8 text; missing files, directories, oversize files and undecodable bytes
    raise ``error`` as one line naming the file (and the line of the bad byte)."""
    path = Path(path)
    if not path.exists():
        raise error("file not found", file=path)
    if path.is_dir():
        raise error("is a directory, expected a file", file=path)
    try:
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise error(f"file is larger than {max_bytes} bytes", file=path)
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", file=path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                    file=path, line=line) from None


def read_yaml(path: str | Path) -> tuple[Any, dict[str, int]]:
    """Parse a YAML file; return (data, {dotted_path: line}). Syntax errors name the line;
    alias bombs, recursive aliases, deep nesting and bad UTF-8 are one-line ``ConfigError``s."""
    path = Path(path)
    text = read_text_checked(path, max_bytes=MAX_YAML_BYTES)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_node_size(node, path)
        data = yaml.safe_load(text)
        lines = _line_index(node) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"invalid YAML: {exc.problem or exc.context}", file=path, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          file=path) from None
    except RecursionError:
        raise ConfigError("YAML nested too deeply", file=path) from None
    return data, lines


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, field: str, ctx: "_Ctx") -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own error is the precise one
            return _convert(value, real[0], field, ctx)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, field, ctx)
            except ConfigError as exc:
                errors.append(exc.message)
        ctx.fail(field, f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            ctx.fail(field, f"must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, field, ctx)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            ctx.fail(field, f"expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{field}[{i}]", ctx) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            ctx.fail(field, f"expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _convert(v, vt, f"{field}.{k}", ctx) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 1e-5 as a string; accept numeric strings.
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    pass
                else:
                    if not math.isfinite(value):
                        ctx.fail(field, f"must be a finite number, got {value!r}")
                    return value
            ctx.fail(field, f"expected float, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            ctx.fail(field, f"must be a finite number, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            ctx.fail(field, f"expected int, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            ctx.fail(field, f"expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            ctx.fail(field, f"expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        if not isinstance(value, str):
            ctx.fail(field, f"expected a path, got {value!r}")
        return Path(value)
    return value


class _Ctx:
    def __init__(self, file: Path | None, lines: dict[str, int]):
        self.file = file
        self.lines = lines

    def fail(self, field: str, message: str) -> typing.NoReturn:
        raise ConfigError(message, file=self.file, line=nearest_line(self.lines, field), field=field or None)


def _build(cls: type[T], data: Any, prefix: str, ctx: _Ctx) -> T:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        ctx.fail(prefix, f"expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        ctx.fail(f"{prefix}.{key}" if prefix else key,
                 f"unknown field for {cls.__name__}; valid fields: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], path, ctx)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            ctx.fail(path, "required field is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        if isinstance(exc, ConfigError):
            raise
        message = str(exc)
        named = message.split(" ", 1)[0].rsplit(".", 1)[-1]  # "lora.alpha must be ..." names its field
        if named in fields:
            path = f"{prefix}.{named}" if prefix else named
            raise ConfigError(message, file=ctx.file, line=nearest_line(ctx.lines, path), field=path) from None
        ctx.fail(prefix, message)


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 optional: bool = False) -> None:
    """``ValueError`` (turned into a one-line ``ConfigError`` with file:line by ``from_dict``)
    unless ``value`` is a finite number (an int if ``integer``) within the given bounds."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a finite number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], *, file: str | Path | None = None,
              lines: dict[str, int] | None = None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain dict with the same validation as ``load_config``."""
    return _build(cls, data, prefix, _Ctx(Path(file) if file else None, lines or {}))


def load_config(path: str | Path, cls: type[T]) -> T:
    """Load YAML file ``path`` into dataclass ``cls`` (nested dataclasses supported)."""
    data, lines = read_yaml(path)
    return from_dict(cls, data, file=path, lines=lines)


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> JSON-ready dict (Paths become strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(obj: Any) -> str:
    """Stable sha256 (hex, 16 chars) of a config's JSON form."""
    blob = json.dumps(to_dict(obj), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
