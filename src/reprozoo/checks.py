"""`reprozoo check RECIPE`: the sanity checks practitioners run before touching hyperparameters.

Each family implements them on the recipe's real data pipeline and model (`run_checks`); this module
writes `reports/checks/<recipe>.md` (and its pictures) and turns failures into an exit status.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from . import paths
from .io import atomic_write_text


@dataclass
class Check:
    name: str
    ok: bool
    summary: str  # one line; on failure, what to look at
    details: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def check(recipe, seed: int = 0) -> tuple[list[Check], list]:
    import importlib

    from .errors import ConfigError
    from .families import FAMILY_MODULES

    try:  # a family's checks live in its `checks` module, next to its engine
        module = importlib.import_module(f"{FAMILY_MODULES[recipe.family]}.checks")
    except ModuleNotFoundError:
        raise ConfigError(recipe.path, "family", f"family {recipe.family!r} has no sanity checks yet") from None
    out = paths.reports_dir() / "checks"
    t0 = time.perf_counter()
    results = module.run_checks(recipe, seed, out / f"{recipe.name}-samples.png")
    wall = time.perf_counter() - t0
    lines = [f"# Sanity checks: `{recipe.name}`", "",
             f"`reprozoo check {recipe.name} --seed {seed}`: {sum(c.ok for c in results)}/{len(results)} passed in {wall:.1f} s.", "",
             "| check | result | summary |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.ok else '**FAIL**'} | {c.summary} |" for c in results]
    for c in results:
        lines += ["", f"## {c.name}", "", *(f"- {d}" for d in c.details), *(f"\n![{c.name}]({f})" for f in c.figures)]
    written = [atomic_write_text(out / f"{recipe.name}.md", "\n".join(lines) + "\n")]
    return results, written
