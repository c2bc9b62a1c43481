"""Prepared datasets: `datasets/<name>/`, written by `reprozoo prepare` (a DVC stage).

Raw, user-provided data lives elsewhere: `$REPROZOO_DATA/<name>` or `data/<name>` (see
`paths.find_raw`). Keeping the two trees apart keeps DVC outputs from overlapping `data.dvc`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from . import paths


def prepared_dir(name: str) -> Path:
    return paths.datasets_dir() / name


def prepare(family: str, name: str, force: bool = False) -> Path:
    """Prepare dataset `name` of `family` into `datasets/<name>/` atomically."""
    from .families import get_family, require

    require(family)
    out = prepared_dir(name)
    if out.exists() and not force:
        return out
    staging = out.parent / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    get_family(family).prepare(name, staging)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def ensure_prepared(family: str, name: str) -> Path:
    out = prepared_dir(name)
    return out if out.exists() else prepare(family, name)
