"""Seed-batched vs one-seed training of the same recipe, full length: accuracies paired by seed, TOST.

Each recipe is trained for its seeds twice in a scratch project (REPROZOO_ROOT, the repository's recipes
and prepared data), once as the recipe says (`speed.seed_block: 5`, one stacked model) and once with
`seed_block: 1` (one MMEngine run per seed). Both start every seed from the same weights and feed the same
batches, so the difference is the engines' arithmetic and, for random tricks, their random streams.

    uv run python benchmarks/seed_batching.py mnist1d_cnn mnist1d_gru --margin 1.0
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipes", nargs="+")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--margin", type=float, default=1.0, help="equivalence margin in accuracy points")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="seed_batching-"))
    shutil.copytree(REPO / "recipes", root / "recipes")
    if (REPO / "datasets").is_dir():
        shutil.copytree(REPO / "datasets", root / "datasets")
    os.environ["REPROZOO_ROOT"] = str(root)
    from statsmodels.stats.weightstats import ttost_paired

    from reprozoo.recipes import load_recipe
    from reprozoo.runs import execute

    for name in args.recipes:
        (root / f"recipes/classification/{name}__one.yaml").write_text(f"extends: {name}\nspeed: {{seed_block: 1}}\n")
        acc, wall = {}, {}
        for engine, recipe in (("batched", load_recipe(name)), ("one-seed", load_recipe(f"{name}__one"))):
            t = time.perf_counter()
            acc[engine] = np.array([execute(recipe, s, progress=False)["test"]["accuracy"] for s in range(args.seeds)])
            wall[engine] = time.perf_counter() - t
        d = acc["batched"] - acc["one-seed"]
        p_tost = ttost_paired(acc["batched"], acc["one-seed"], -args.margin, args.margin)[0] if d.std() > 0 else 0.0
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        print(f"{name}: batched {acc['batched'].tolist()} (mean {acc['batched'].mean():.2f}, {wall['batched']:.0f} s); "
              f"one-seed {acc['one-seed'].tolist()} (mean {acc['one-seed'].mean():.2f}, {wall['one-seed']:.0f} s); "
              f"difference {d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}] (95% t CI); "
              f"TOST +-{args.margin} p = {p_tost:.4f} -> {'equivalent' if p_tost < 0.05 else 'NOT shown equivalent'}",
              flush=True)
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
