"""Prepared datasets: `datasets/<name>/`, written by `reprozoo prepare` (a DVC stage).

Raw, user-provided data lives elsewhere: `$REPROZOO_DATA/<name>` or `data/<name>` (see
`paths.find_raw`). Keeping the two trees apart keeps DVC outputs from overlapping `data.dvc`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from . import fetch, paths
from .errors import ReprozooError
from .io import exclusive


class DataError(ReprozooError):
    """A raw dataset file is damaged or not what the dataset expects."""


def prepared_dir(name: str) -> Path:
    return paths.datasets_dir() / name


def prepare(family: str, name: str, force: bool = False) -> Path:
    """Prepare dataset `name` of `family` into `datasets/<name>/` atomically."""
    from .families import require

    require(family)
    out = prepared_dir(name)
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # Several processes may need the same dataset at once (the ranks of a `devices: N` run, parallel
    # `reprozoo run`s): one prepares, the others wait for it and then find it there.
    with exclusive(paths.locks_dir() / f"dataset-{name}.lock", wait_for=f"preparing dataset {name!r}"):
        if out.exists() and not force:
            return out
        return _prepare_locked(family, name, out)


def _prepare_locked(family: str, name: str, out: Path) -> Path:
    from .families import get_family

    staging = out.parent / f".{name}.staging"  # the lock makes it ours; a killed run's is swept
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        get_family(family).prepare(name, staging)
    except Exception as e:
        raise _named(e, name, staging) from None
    except BaseException:  # Ctrl-C: no half-prepared folder stays behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out


def _named(e: Exception, name: str, staging: Path) -> ReprozooError:
    """The error of a failed prepare, naming the user's raw file rather than its copy in the staging
    folder (which is removed: nothing partial stays behind)."""
    copies = {c: o for c, o in fetch.ORIGINS.items() if staging in c.parents}
    shutil.rmtree(staging, ignore_errors=True)
    msg = " ".join(str(e).split()) or type(e).__name__
    for copy, origin in copies.items():
        msg = msg.replace(str(copy), origin)
    if isinstance(e, ReprozooError):
        return e if msg == " ".join(str(e).split()) else DataError(msg)
    culprit = next(reversed(copies.values()), None)  # files are read as they are fetched: the last one failed
    where = f"{culprit}: " if culprit and culprit not in msg else ""
    return DataError(f"{where}preparing dataset {name!r} failed ({type(e).__name__}: {msg[:300]}); "
                     "is the file complete and the original? Replace it and run the command again")


def ensure_prepared(family: str, name: str) -> Path:
    out = prepared_dir(name)
    return out if out.exists() else prepare(family, name)
