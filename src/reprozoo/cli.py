"""`reprozoo` command line: list, prepare, run, compare, report."""
from __future__ import annotations

import argparse
import sys

from .errors import ReprozooError

EPILOG = """examples:
  reprozoo list                      recipes, claims files and families
  reprozoo run mnist1d_cnn --seed 0  train one recipe with one seed into runs/mnist1d_cnn/seed0/
  reprozoo compare mnist1d           verdicts of baselines/mnist1d.yaml against the runs
  reprozoo report mnist1d            reports/mnist1d.{md,csv,png} from the verdicts
The whole default pipeline: `uv run dvc repro` (see README.md)."""


def cmd_list(args) -> int:
    from .claims import list_baselines, load_baseline
    from .families import family_names, get_family
    from .recipes import load_recipe, recipe_names

    what = args.what
    if what in ("all", "recipes"):
        print("recipes:")
        for name in recipe_names():
            r = load_recipe(name)
            print(f"  {name:<28} {r.family:<15} {r.config['description']}")
    if what in ("all", "claims"):
        print("claims (baselines/):")
        for b in list_baselines():
            base = load_baseline(b)
            print(f"  {b:<28} {len(base.claims)} claims  {base.title}")
    if what in ("all", "families"):
        print("families:")
        for f in family_names():
            fam = get_family(f)
            print(f"  {f:<28} models: {', '.join(fam.models.names())}; datasets: {', '.join(fam.datasets.names())}")
    if what == "tricks":
        print("tricks: none registered yet")
    return 0


def cmd_prepare(args) -> int:
    from .datasets_store import prepare
    from .families import family_names, get_family
    from .errors import ConfigError

    for name in args.datasets:
        fam = next((f for f in family_names() if name in get_family(f).datasets), None)
        if fam is None:
            allowed = [d for f in family_names() for d in get_family(f).datasets.names()]
            raise ConfigError("command line", "dataset", f"unknown dataset {name!r}", allowed)
        print(f"prepared {prepare(fam, name, force=args.force)}")
    return 0


def cmd_run(args) -> int:
    from .recipes import load_recipe
    from .runs import execute, run_dir

    recipe = load_recipe(args.recipe)
    for seed in args.seed:
        metrics = execute(recipe, seed, force=args.force, threads=args.threads, progress=not args.no_progress)
        print(f"{run_dir(recipe.name, seed)}: {metrics}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="reprozoo", description="Reproduce published baselines with seed-aware verdicts.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="show recipes, claims files, families or tricks")
    s.add_argument("what", nargs="?", default="all", choices=["all", "recipes", "claims", "families", "tricks"])
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("prepare", help="prepare datasets into datasets/<name>/")
    s.add_argument("datasets", nargs="+", metavar="DATASET")
    s.add_argument("--force", action="store_true", help="prepare again even if present")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("run", help="train a recipe with one or more seeds into runs/<recipe>/seed<N>/")
    s.add_argument("recipe", help="recipe name (see `reprozoo list recipes`) or path to a recipe YAML")
    s.add_argument("--seed", type=int, nargs="+", default=[0], help="seed(s) (default: 0)")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $REPROZOO_THREADS or 1; part of bitwise determinism)")
    s.add_argument("--force", action="store_true", help="re-run and replace a finished run")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_run)

    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ReprozooError as e:
        print(f"reprozoo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
