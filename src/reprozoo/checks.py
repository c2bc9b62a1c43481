"""`reprozoo check RECIPE`: the sanity checks practitioners run before touching hyperparameters.

Each family implements them on the recipe's real data pipeline and model (`Family.run_checks`); this module
writes `reports/checks/<recipe>.md` (and its pictures) and turns failures into an exit status.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .io import atomic_write_text


@dataclass
class Check:
    name: str
    ok: bool
    summary: str  # one line; on failure, what to look at
    details: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def save_grid(out: Path, cells: list, *, cols: int, cell: tuple[float, float]) -> Path:
    """A grid of titled pictures saved to `out`: `cells` holds `(title, draw)` pairs, `draw(ax)` drawing
    one picture into its axes (None: title only); at most `cols` per row, `cell` inches each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(cols, max(1, len(cells)))
    rows = max(1, -(-len(cells) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cell[0] * cols, cell[1] * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, draw) in zip(axes.flat, cells):
        if draw is not None:
            draw(ax)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return out


def batch_size_scan(step, sizes, repeats: int = 1) -> str:
    """Samples/s of training steps at each batch size (`step(bs)` runs one), stopping at the first size that
    does not fit in memory, and where throughput stops growing: the smallest batch within 10% of the best,
    the point the tuning playbook advises (larger batches there buy no speed)."""
    import torch

    scan, note = [], ""
    for bs in sizes:
        try:
            t0 = time.perf_counter()
            for _ in range(repeats):
                step(bs)
            scan.append((bs, repeats * bs / (time.perf_counter() - t0)))
        except (torch.cuda.OutOfMemoryError, MemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            note = f"; batch {bs} does not fit in memory"
            break
    if not scan:
        return "batch-size scan: not even batch " + str(sizes[0]) + " fits in memory"
    best = max(sps for _, sps in scan)
    knee = min(bs for bs, sps in scan if sps >= 0.9 * best)
    return ("batch-size scan (samples/s): " + ", ".join(f"{bs}: {sps:.1f}" for bs, sps in scan)
            + f"; throughput stops growing at batch {knee} (within 10% of the best)" + note)


def profile_top(fn, n: int = 4) -> str:
    """The `n` functions that spend the most time themselves (not in their callees) in a cProfile of `fn()`:
    where the input pipeline's time really goes."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof).stats  # (file, line, function) -> (prim calls, calls, own time, cumulative, callers)
    total = sum(v[2] for v in stats.values()) or 1e-12
    top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:n]
    return "input pipeline profile (own time): " + "; ".join(
        f"{func}{'' if file == '~' else f' ({Path(file).name}:{line})'} {1000 * own:.1f} ms, {100 * own / total:.0f}%, {calls} calls"
        for (file, line, func), (_, calls, own, _, _) in top)


def guarded(name: str, fn, *args) -> Check:
    """A check that raises fails with the error as its diagnosis, and the others still run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - any error is the finding
        return Check(name, False, f"raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", [])


def run_in_scratch(checks, look_at_data, recipe, seed: int, out_png) -> list[Check]:
    """Each `(name, fn(recipe, seed, work))` of a family, then `look_at_data(recipe, seed, work, out_png)`,
    with a scratch folder `work` for their runners' files."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = [guarded(name, f, recipe, seed, work) for name, f in checks]
        return results + [guarded("look at the data", look_at_data, recipe, seed, work, out_png)]


def check(recipe, seed: int = 0) -> tuple[list[Check], list]:
    from .families import get_family, require

    require(recipe.family)
    out = paths.reports_dir() / "checks"
    t0 = time.perf_counter()
    results = get_family(recipe.family).run_checks(recipe, seed, out / f"{recipe.name}-samples.png")
    wall = time.perf_counter() - t0
    lines = [f"# Sanity checks: `{recipe.name}`", "",
             f"`reprozoo check {recipe.name} --seed {seed}`: {sum(c.ok for c in results)}/{len(results)} passed in {wall:.1f} s.", "",
             "| check | result | summary |", "|---|---|---|"]
    lines += [f"| {c.name} | {'pass' if c.ok else '**FAIL**'} | {c.summary} |" for c in results]
    for c in results:
        lines += ["", f"## {c.name}", "", *(f"- {d}" for d in c.details), *(f"\n![{c.name}]({f})" for f in c.figures)]
    written = [atomic_write_text(out / f"{recipe.name}.md", "\n".join(lines) + "\n")]
    return results, written
