"""Raw files for prepare stages: from the local data store first, else downloaded, always checksummed.

Lookup order for `<dataset>/<filename>`: `$REPROZOO_DATA/<dataset>/`, then `data/<dataset>/`, then the
download URL (into the prepare stage's own output). With no network and no local copy, the error
says where to put the file.
"""
from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from . import paths
from .errors import ReprozooError


class FetchError(ReprozooError):
    """A raw file is missing, unreachable or corrupt."""


# copy in a prepare stage's staging folder -> the user's file (or URL) it came from, newest last, so that
# an error found while parsing the copy can name the file the user must replace
ORIGINS: dict[Path, str] = {}


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(dataset: str, filename: str, *, md5: str | None, url: str | None, dest: Path, timeout: float = 30) -> Path:
    """Return a verified copy of `filename` in `dest`, taken from the data roots or `url`.

    `md5=None` leaves the check to the caller: for archives whose compressed bytes vary between
    copies, the caller checks the decompressed content."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / filename
    for root in paths.data_roots():
        local = root / dataset / filename
        if local.exists():
            if md5 is not None and md5sum(local) != md5:
                raise FetchError(f"{local}: md5 {md5sum(local)} does not match the expected {md5}; "
                                 "the file is corrupt or another version")
            shutil.copyfile(local, target)
            ORIGINS[target] = str(local)
            return target
    if url is None:
        raise FetchError(_missing(dataset, filename, "it has no public download"))
    partial = target.with_name(target.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(partial, "wb") as f:
            shutil.copyfileobj(r, f)
    except (urllib.error.URLError, OSError) as e:
        partial.unlink(missing_ok=True)
        raise FetchError(_missing(dataset, filename, f"downloading {url} failed ({e})")) from None
    if md5 is not None and md5sum(partial) != md5:
        got = md5sum(partial)
        partial.unlink()
        raise FetchError(f"{url}: downloaded md5 {got} does not match the expected {md5}")
    partial.replace(target)
    ORIGINS[target] = url
    return target


def _missing(dataset: str, filename: str, why: str) -> str:
    where = " or ".join(str(r / dataset / filename) for r in paths.data_roots())
    return f"{dataset}/{filename}: not found locally and {why}. Put the file at {where} (set {paths.DATA_ENV} to use another folder)."
