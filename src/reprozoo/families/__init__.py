"""Task families plug into the core here: each module exposes `FAMILY`, an object that satisfies
`reprozoo.family_api.Family` (prepare / train / evaluate / checks, the tricks it implements, the
files its stages depend on). `tests/test_family_contract.py` holds every family to it.

The core imports a family only when a recipe names it, so one family's heavy dependencies
(MMDetection, Transformers) never load for another.
"""
from __future__ import annotations

import importlib
import importlib.util

from ..errors import ReprozooError

FAMILY_MODULES = {
    "classification": "reprozoo.families.classification",
    "detection": "reprozoo.families.detection",
    "segmentation": "reprozoo.families.segmentation",
    "text": "reprozoo.families.text",
}


# Families whose framework is an optional extra of the package: (extra, modules it must provide).
EXTRAS = {
    "detection": ("openmmlab", ("mmcv", "mmdet", "pycocotools")),
    "segmentation": ("openmmlab", ("mmcv", "mmseg")),
}


class MissingExtra(ReprozooError):
    """A family's framework is not installed."""


def missing_extra(name: str) -> str | None:
    """None if family `name` can run here, else a one-line reason naming the install command."""
    if name not in EXTRAS:
        return None
    extra, modules = EXTRAS[name]
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return (f"the {name} family needs the '{extra}' extra ({', '.join(absent)} not installed): "
            f"`uv sync --extra {extra}` (or `pip install 'reprozoo[{extra}]'`)")


def require(name: str) -> None:
    """Raise a one-line error if family `name` cannot run here."""
    why = missing_extra(name)
    if why:
        raise MissingExtra(why)


def family_names() -> list[str]:
    return sorted(FAMILY_MODULES)


def get_family(name: str):
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY
