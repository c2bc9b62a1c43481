"""Code manifests: the SHA-256 of every file a pipeline's runs execute, one line each.

A pipeline's train stages depend on their manifest (`.reprozoo/code/<pipeline>/<stage>.sha256`,
written by a `code_*` stage that depends on the files themselves) rather than on each code file.
DVC then hashes and records a dozen code files once per pipeline, not once per (recipe, seed)
stage: that bookkeeping was most of the time of a `dvc repro` with nothing to do. Editing a code
file still re-runs every run that executes it: the manifest changes, and the runs depend on it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import ConfigError
from .io import atomic_write_text


CODE_MANIFESTS = ".reprozoo/code/"  # where the pipelines keep them: .reprozoo/code/<pipeline>/<stage>.sha256


def files_of(paths: list[str], root: Path = Path(".")) -> list[Path]:
    """The files named (relative to `root`), folders expanded (sorted), leaving out what `.dvcignore`
    leaves out (bytecode)."""
    out: list[Path] = []
    for p in (Path(root) / p for p in paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc")
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(p, None, "no such file or folder; the pipeline names it as code its runs execute "
                              "(regenerate the pipeline: `reprozoo pipeline all`)")
    return out


def manifest(paths: list[str], root: Path = Path(".")) -> str:
    """'<sha256>  <path>' per file, as `sha256sum` prints it (so `sha256sum -c` checks a checkout against it)."""
    return "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(root).as_posix()}\n"
                   for f in files_of(paths, root))


def code_hashes(manifest_file: Path, root: Path) -> dict[str, str]:
    """{file: SHA-256 now} for the files `manifest_file` lists (gone ones: "missing"), relative to `root`."""
    out = {}
    for line in Path(manifest_file).read_text().splitlines():
        name = line.split("  ", 1)[1]
        f = Path(root) / name
        out[name] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else "missing"
    return out


def write(out: Path, paths: list[str]) -> Path:
    return atomic_write_text(out, manifest(paths))
