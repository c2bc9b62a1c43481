"""Strict, safe reading of the YAML files users write (recipes, claims, ablation specs, params.yaml).

PyYAML's `safe_load` never runs code, but it lets the last of two equal keys win silently (`lr: 0.01`
then `lr: 5` trains at 5), accepts `.nan`/`.inf`, and lets anchors and aliases stand for a document
far larger than the file (a "billion laughs" expands when the recipe is hashed). Here each of those
is a `ConfigError` naming the file, the key and the line.
"""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from .errors import ConfigError
from .io import bounded_text

MAX_BYTES = 1 << 20  # a recipe or claims file is a few KiB; anything this large is not one
MAX_NODES = 100_000  # values after expanding aliases


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: keys written beside it override the merged ones, as YAML means
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key; PyYAML reports it below
                continue
            if first is not None:
                raise _Duplicate(key, first.start_mark.line + 1, key_node.start_mark.line + 1)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


class _Duplicate(Exception):
    def __init__(self, key, first: int, second: int):
        self.key, self.first, self.second = key, first, second


def _expanded_size(node, memo: dict) -> int:
    """How many values `node` stands for once every alias is expanded (memoised: aliases share nodes)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once; PyYAML refuses to construct it anyway
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _non_finite(data, key: str = ""):
    """The dotted key of the first NaN/Inf number in `data`, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return key or "(the document)"
    if isinstance(data, dict):
        items = ((f"{key}.{k}" if key else str(k), v) for k, v in data.items())
    elif isinstance(data, list):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(data))
    else:
        return None
    for k, v in items:
        if (bad := _non_finite(v, k)) is not None:
            return bad
    return None


def load(path: Path, what: str = "YAML", *, empty_ok: bool = False) -> dict:
    """The mapping in YAML file `path`; every way it can be wrong is a ConfigError naming the file."""
    text = bounded_text(path, what, MAX_BYTES)
    try:
        loader = _Loader(text)  # its reader already refuses control characters
        try:  # compose once, measure the alias expansion, then build the values from the same node graph
            node = loader.get_single_node()
            if node is not None and (n := _expanded_size(node, {})) > MAX_NODES:
                raise ConfigError(path, None, f"its anchors and aliases expand to {n} values (limit {MAX_NODES})")
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _Duplicate as d:
        raise ConfigError(path, str(d.key), f"written twice (lines {d.first} and {d.second}); keep one") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, None, f"not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(path, None, "nested too deeply") from None
    if data is None:
        if empty_ok:
            return {}
        raise ConfigError(path, None, f"the file is empty; a {what} file is a YAML mapping")
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"a {what} file must be a YAML mapping (key: value lines), got a {type(data).__name__}")
    if (bad := _non_finite(data)) is not None:
        raise ConfigError(path, bad, "not a finite number (.nan/.inf); write the value itself")
    return data
