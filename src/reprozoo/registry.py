"""Name -> factory registries for models, datasets and tricks, with one-line descriptions."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **info):
        """Decorator: `@MODELS.register("mnist1d_cnn", source="...")`."""

        def deco(obj):
            key = name or obj.__name__
            if key in self._items:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = obj
            self._info[key] = {"doc": (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else "", **info}
            return obj

        return deco

    def get(self, name: str) -> Callable:
        return self._items[name]

    def info(self, name: str) -> dict[str, Any]:
        return self._info[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items

    def build(self, spec: dict):
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        return self._items[spec["name"]](**kwargs)
