"""A small declarative validator for recipe and claim files.

Every error names the file, the dotted key and the allowed values, so a user can fix the YAML
without reading code.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

REQUIRED = object()

_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list", dict: "mapping"}


def _type_name(types) -> str:
    """'an integer', 'a string or a mapping'."""
    types = types if isinstance(types, tuple) else (types,)
    names = [_TYPE_NAMES.get(t, getattr(t, "__name__", str(t))) for t in types]
    return " or ".join(("an " if n[0] in "aeiou" else "a ") + n for n in names)


def _is_instance(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False  # YAML `yes` must not pass as a number
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, types)


@dataclass
class Field:
    """A leaf value: its type(s), default, allowed choices and a one-line doc."""

    types: Any
    default: Any = REQUIRED
    choices: Callable[[], Any] | Any = None
    doc: str = ""
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None  # returns a problem or None
    omit_default: bool = False  # not written into the config when absent: adding the key leaves hashes alone

    def validate(self, value, file, key):
        if value is None and (self.nullable or self.default is None):
            return None
        if not _is_instance(value, self.types):
            raise ConfigError(file, key, f"expected {_type_name(self.types)}, got {value!r}")
        if problem := sane_number(value):
            raise ConfigError(file, key, problem)
        choices = self.choices() if callable(self.choices) else self.choices
        if choices is not None and value not in choices:
            raise ConfigError(file, key, f"unknown value {value!r}", choices)
        if self.check is not None and (problem := self.check(value)):
            raise ConfigError(file, key, problem)
        if isinstance(value, int) and not isinstance(value, bool) and float in _as_tuple(self.types) and int not in _as_tuple(self.types):
            return float(value)
        return value


def _as_tuple(t):
    return t if isinstance(t, tuple) else (t,)


@dataclass
class Section:
    """A mapping with a fixed set of keys."""

    fields: dict[str, Any]
    doc: str = ""
    default: Any = field(default_factory=dict)

    def validate(self, value, file, key):
        value = {} if value is None else value
        if not isinstance(value, Mapping):
            raise ConfigError(file, key, f"expected a mapping, got {value!r}")
        unknown = set(value) - set(self.fields)
        if unknown:
            bad = sorted(unknown)[0]
            raise ConfigError(file, _join(key, bad), "unknown key", self.fields)
        out = {}
        for name, spec in self.fields.items():
            sub = _join(key, name)
            if name in value:
                out[name] = spec.validate(value[name], file, sub)
            elif isinstance(spec, Section):
                out[name] = spec.validate({}, file, sub)
            elif getattr(spec, "omit_default", False):
                continue
            elif getattr(spec, "default", REQUIRED) is REQUIRED:
                raise ConfigError(file, sub, "missing required key")
            else:
                d = spec.default
                out[name] = d() if callable(d) and not isinstance(d, type) else _copy(d)
        return out


@dataclass
class ListOf:
    """A list whose items all follow one spec."""

    item: Any
    default: Any = field(default_factory=list)
    doc: str = ""

    def validate(self, value, file, key):
        if value is None:
            return []
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected a list, got {value!r}")
        return [self.item.validate(v, file, f"{key}[{i}]") for i, v in enumerate(value)]


@dataclass
class Component:
    """`{name: <registered factory>, **kwargs}`; kwargs are checked against the factory's signature."""

    registry: Any  # a reprozoo.registry.Registry
    doc: str = ""
    default: Any = REQUIRED

    def validate(self, value, file, key):
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping) or "name" not in value:
            raise ConfigError(file, _join(key, "name"), "missing required key", self.registry.names())
        name = value["name"]
        if name not in self.registry:
            raise ConfigError(file, _join(key, "name"), f"unknown {self.registry.kind} {name!r}", self.registry.names())
        kwargs = {k: v for k, v in value.items() if k != "name"}
        params = _parameters(self.registry.get(name))
        unknown = set(kwargs) - set(params)
        if unknown:
            bad = sorted(unknown)[0]
            raise ConfigError(file, _join(key, bad), f"unknown parameter of {self.registry.kind} {name!r}", params)
        out = {"name": name}
        checks = self.registry.info(name).get("checks", {})
        for pname, p in params.items():
            if pname in kwargs:
                v = kwargs[pname]
                if p.default is not inspect.Parameter.empty and p.default is not None and not _is_instance(v, type(p.default)):
                    raise ConfigError(file, _join(key, pname), f"expected {_type_name(type(p.default))}, got {v!r}")
                if (problem := sane_number(v)) or (pname in checks and (problem := checks[pname](v))):
                    raise ConfigError(file, _join(key, pname), problem)
                out[pname] = v
            elif p.default is inspect.Parameter.empty:
                raise ConfigError(file, _join(key, pname), f"missing required parameter of {self.registry.kind} {name!r}")
            else:
                out[pname] = p.default
        return out


def _parameters(factory) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(factory)
    return {n: p for n, p in sig.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}


def _join(key, name):
    return f"{key}.{name}" if key else name


def _copy(v):
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


MAX_INT = 10**9  # no count in a recipe (iterations, sizes, layers) comes near this; a larger one is a typo
MAX_FLOAT = 1e15  # nor does any rate, weight or published number; torch overflows float32 near 3e38


def sane_number(v) -> str | None:
    """NaN/Inf, or an integer no run could ever reach, is a problem whatever the key."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return f"must be a finite number, got {v!r}"
    if isinstance(v, float) and abs(v) > MAX_FLOAT:
        return f"{v!r} is beyond any sensible value (limit {MAX_FLOAT:.0e}); a typo?"
    if isinstance(v, int) and abs(v) > MAX_INT:
        return f"{v} is beyond any run (limit {MAX_INT:.0e}); a typo?"
    return None


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False):
    """A check: lo <= v <= hi, each end open or closed; `math.inf` for no upper bound."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"

    def check(v):
        ok = (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
        return None if ok else f"must be in {left}{lo:g}, {hi:g}{right}, got {v!r}"
    check.range = f"{left}{lo:g}, {hi:g}{right}"
    return check


def one_of(*choices):
    def check(v):
        return None if v in choices else f"unknown value {v!r} (allowed: {', '.join(map(str, choices))})"
    check.range = "{" + ", ".join(map(str, choices)) + "}"
    return check


def positive(v):
    return None if v > 0 else f"must be > 0, got {v!r}"


def non_negative(v):
    return None if v >= 0 else f"must be >= 0, got {v!r}"
