"""The trick registry: named, documented changes to a recipe (cosine schedule, EMA, mixup...).

A trick declares the families it supports, its parameters and the paper it comes from. Recipes
list tricks by name (`tricks: [cosine]`) or with parameters (`tricks: [{name: ema, momentum: 0.999}]`);
an unknown trick, or one its family does not support, is an error.
"""
from __future__ import annotations

from .errors import ConfigError
from .registry import Registry

TRICKS = Registry("trick")


def check_family(tricks: list[dict], family: str, file) -> None:
    for i, t in enumerate(tricks):
        families = TRICKS.info(t["name"]).get("families", ())
        if family not in families:
            raise ConfigError(file, f"tricks[{i}]", f"trick {t['name']!r} does not support family {family!r}", families)
