"""Where things live. Every path is relative to the project root unless the user says otherwise."""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "REPROZOO_DATA"


def project_root() -> Path:
    """The nearest parent of the working directory holding `recipes/` and `baselines/`."""
    env = os.environ.get("REPROZOO_ROOT")
    if env:
        if not Path(env).is_dir():
            from .errors import ReprozooError

            raise ReprozooError(f"REPROZOO_ROOT={env}: no such folder (it names the project: the folder with recipes/ and baselines/)")
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "recipes").is_dir() and (p / "baselines").is_dir():
            return p
    return here


def recipes_dir() -> Path:
    return project_root() / "recipes"


def baselines_dir() -> Path:
    return project_root() / "baselines"


def runs_dir() -> Path:
    return project_root() / "runs"


def reports_dir() -> Path:
    return project_root() / "reports"


def work_dir() -> Path:
    """Scratch space for checkpoints and framework logs; never a DVC output, so resume survives."""
    return project_root() / ".reprozoo" / "work"


def locks_dir() -> Path:
    """Lock files that keep two processes from doing the same work at once (a run, a dataset's preparation)."""
    return project_root() / ".reprozoo" / "locks"


def datasets_dir() -> Path:
    """Prepared datasets written by pipeline stages (DVC outputs)."""
    return project_root() / "datasets"


def data_roots() -> list[Path]:
    """Folders searched for user-provided raw data, in order: $REPROZOO_DATA, then `data/`."""
    roots = []
    if os.environ.get(DATA_ENV):
        roots.append(Path(os.environ[DATA_ENV]).expanduser().resolve())
    roots.append(project_root() / "data")
    return roots


def find_raw(name: str) -> Path | None:
    """The first `<root>/<name>` that exists among the data roots, else None."""
    for root in data_roots():
        if (root / name).exists():
            return root / name
    return None
