"""`reprozoo` command line: list, prepare, run, compare, report."""
from __future__ import annotations

import argparse
import errno
import os
import sys

from .errors import ReprozooError

EPILOG = """examples:
  reprozoo list                      recipes, claims files and families
  reprozoo run mnist1d_cnn --seed 0  train one recipe with one seed into runs/mnist1d_cnn/seed0/
  reprozoo compare mnist1d           verdicts of baselines/mnist1d.yaml against the runs
  reprozoo report mnist1d            reports/mnist1d.{md,csv,png} from the verdicts
  reprozoo ablate mnist1d_cnn_tricks train the ablation's missing runs, then reports/ablations/ tables
  reprozoo errors mnist1d_cnn        per-class metrics, confusion, highest-loss samples -> reports/errors/
The whole default pipeline: `uv run dvc repro` (see README.md)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (the usage is one `--help` away)."""

    def error(self, message):
        self.exit(2, f"reprozoo: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _int_at_least(low: int, what: str, high: int = 2**31 - 1):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"{what} must be in {low}..{high}, got {v}")
        return v
    return parse


def _finite_float(low: float, high: float, what: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not low <= v <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{what} must be in [{low:g}, {high:g}], got {text}")
        return v
    return parse


SEED = _int_at_least(0, "a seed")
THREADS = _int_at_least(1, "threads", 4096)  # more threads than any machine has cores only exhausts memory


def _plain_name(name: str, what: str) -> str:
    """A recipe, baseline or report name that is a name, not a path: results land under reports/ and runs/."""
    from .errors import ConfigError
    from .recipes import NAME

    if not NAME.fullmatch(name):
        raise ConfigError("command line", what, f"{name!r} is not a name (letters, digits, _ . + - = , ( ); no slashes)")
    return name


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
            models = ", ".join(fam.models.names()) if fam.models is not None else "named by each recipe's framework config"
            print(f"  {f:<28} models: {models}; datasets: {', '.join(fam.datasets.names())}")
    if what in ("all", "tricks"):
        from .tricks import TRICKS

        from .families import family_names, get_family

        print("tricks:" + ("" if TRICKS.names() else " none registered yet"))
        by = {f: get_family(f).tricks for f in family_names()}
        for t in TRICKS.names():
            import inspect

            info = TRICKS.info(t)
            ranges = {k: f" in {c.range}" for k, c in info.get("checks", {}).items()}
            params = ", ".join(f"{k}={p.default}{ranges.get(k, '')}" for k, p in inspect.signature(TRICKS.get(t)).parameters.items())
            print(f"  {t:<20} {info['doc']}\n  {'':<20} params: {params or 'none'}; families: "
                  f"{', '.join(f for f in by if t in by[f])}\n  {'':<20} source: {info.get('source', '')}")
    if what in ("all", "ablations"):
        from .ablations import list_ablations, load_ablation

        print("ablations (recipes/ablations/):")
        for a in list_ablations():
            ab = load_ablation(a)
            print(f"  {a:<28} {ab.config['base']} + {len(ab.tricks)} tricks, {', '.join(ab.config['modes'])}; {ab.config['description']}")
    if what in ("all", "studies"):
        from .studies import list_studies, load_study

        print("studies (recipes/studies/):")
        for name in list_studies():
            st = load_study(name)
            print(f"  {name:<28} {st.key}: {', '.join(st.labels)}; {st.config['trials']} trials each; {st.config['question']}")
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
    from .families import require
    from .recipes import load_recipe
    from .preflight import execute
    from .runs import run_dir

    recipe = load_recipe(args.recipe)
    require(recipe.family)
    for seed in args.seed:
        metrics = execute(recipe, seed, force=args.force, threads=args.threads, progress=not args.no_progress,
                          record_divergence=args.record_divergence)
        print(f"{run_dir(recipe.name, seed)}: {metrics}")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare
    from .errors import ConfigError

    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        raise ConfigError("command line", "--seeds", f"a seed is listed twice: {args.seeds}")
    result = compare(_plain_name(args.baseline, "baseline"), seeds=args.seeds)
    for label, c in result["claims"].items():
        s = c.get("summary") or {}
        mean = f"{s['mean']:.2f} ± {s['std'] or 0:.2f} (n={s['n']})" if s else "no runs"
        extra = f", ~{c['seeds_needed']} seeds would settle it" if c["seeds_needed"] else ""
        miss = f"  [missing seeds: {c['missing_seeds']}]" if c["missing_seeds"] else ""
        print(f"{label:<32} published {c['published']:g}  ours {mean}  -> {c['verdict']}{extra}{miss}")
        machines = c.get("machines") or []
        if len(machines) > 1 or args.by_machine:
            if len(machines) > 1:
                print(f"  warning: the seeds of {c['recipe']} come from {len(machines)} environments "
                      f"(they differ in: {', '.join(machines[0].get('differs') or ['?'])})")
            for m in machines:
                env = m.get("environment") or {"machine": m["machine"]}
                print(f"    {m['mean']:.2f} (n={m['n']}, seeds {m['seeds']})  " + "; ".join(f"{k}: {v}" for k, v in env.items()))
    print(f"wrote reports/{args.baseline}.json")
    return 0


def cmd_report(args) -> int:
    from .reports import report

    for p in report(_plain_name(args.baseline, "baseline")):
        print(f"wrote {p}")
    return 0


def cmd_ablate(args) -> int:
    from .ablations import analyze, load_ablation, train_missing
    from .ablation_reports import ablation_report

    ab = load_ablation(args.spec if args.spec.endswith((".yaml", ".yml")) else _plain_name(args.spec, "spec"))
    if not args.no_train:
        train_missing(ab, threads=args.threads, progress=not args.no_progress)
    result = analyze(ab)
    for mode, rows in result["modes"].items():
        print(f"{mode}:")
        for r in rows:
            print(f"  {r['trick']:<28} {r['mean']:.2f} vs {r['reference_mean']:.2f}  effect {r['difference']:+.2f} "
                  f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]  p_holm {r['p_holm']:.3f}  adopt: {r['adopt']}")
    for p in ablation_report(ab.name):
        print(f"wrote {p}")
    return 0


def cmd_eval(args) -> int:
    from pathlib import Path

    from .checkpoints import check_checkpoint
    from .errors import ConfigError
    from .recipes import load_recipe

    if not Path(args.checkpoint).is_file():
        raise ConfigError(args.checkpoint, None, "no such checkpoint file")
    if args.name is not None:
        _plain_name(args.name, "--name")
    if not args.source.strip():
        raise ConfigError("command line", "--source", "say where the published number comes from (paper and table, or repo and file)")
    r = check_checkpoint(load_recipe(args.recipe), Path(args.checkpoint), published=args.published, source=args.source,
                         tolerance=args.tolerance, margin=args.margin, name=args.name, trust=args.trust_checkpoint)
    name, value = ("top-1", r["accuracy"]) if "accuracy" in r else (r["metric"], r["value"])
    print(f"{r['checkpoint']} through {r['recipe']}: {name} {value:.2f} on {r['total']} images, 95% interval "
          f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]; published {r['published']:.2f} -> {r['verdict']}")
    return 0


def cmd_check(args) -> int:
    from .checks import check
    from .recipes import load_recipe

    results, written = check(load_recipe(args.recipe), args.seed)
    for c in results:
        print(f"{'pass' if c.ok else 'FAIL'}  {c.name:<20} {c.summary}")
    for p in written:
        print(f"wrote {p}")
    return 0 if all(c.ok for c in results) else 1


def cmd_curve(args) -> int:
    from .reports import curve_report

    for p in curve_report(_plain_name(args.recipe, "recipe"), args.seed):
        print(f"wrote {p}")
    return 0


def cmd_errors(args) -> int:
    from . import paths
    from .error_analysis import analyse
    from .recipes import load_recipe

    r = analyse(load_recipe(_plain_name(args.recipe, "recipe")), args.seed)
    out = paths.reports_dir() / "errors"
    print(f"wrote {out / (r['recipe'] + '.md')} ({r['kind']}, seeds {r['seeds']}, {r['samples']} samples)")
    return 0


def cmd_fingerprint(args) -> int:
    from pathlib import Path

    from .fingerprint import write

    out = write(Path(args.out), args.files)
    print(f"wrote {out} ({len(out.read_text().splitlines())} files)")
    return 0


def cmd_site(args) -> int:
    from .site import build

    from . import paths

    files = build()
    site = paths.reports_dir() / "site"
    print(f"wrote {len(files)} files under {site}/; open {site / 'index.html'} in a browser")
    return 0


def cmd_pipeline(args) -> int:
    from .claims import list_baselines
    from .pipeline import is_current, load_params, orphan_ablations, pipeline_file, write

    names = [b for b in list_baselines() if b in load_params()] if args.baseline == "all" else [args.baseline]
    stale = []
    for name in names:
        if args.check:
            if not is_current(name):
                stale.append(name)
        else:
            for path in write(name):
                print(f"wrote {path}")
    if args.baseline == "all":
        from .pipeline import study_file, study_is_current, write_study
        from .studies import list_studies

        for name in list_studies():
            if args.check:
                if not study_is_current(name):
                    stale.append(("study", name))
            else:
                for path in write_study(name):
                    print(f"wrote {path}")
    for a in orphan_ablations():
        print(f"note: no pipeline trains the base recipe of ablation {a!r}; `reprozoo ablate {a}` runs it without DVC",
              file=sys.stderr)
    if stale:
        print("out of date (run `reprozoo pipeline NAME`, or `all`): " + ", ".join(
            str(study_file(n[1]) if isinstance(n, tuple) else pipeline_file(n)) for n in stale), file=sys.stderr)
        return 1
    return 0


def cmd_study(args) -> int:
    from .studies import load_study, select

    if args.select:  # the pipeline's select stage
        result = select(load_study(args.spec))
        print(f"best trials: {result['best']}")
        for w in result["edge_warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        return 0
    if args.suggest:  # the pipeline's suggest stage (exploit: tpe)
        from .studies import suggest

        print(f"suggested {len(suggest(load_study(args.spec))['points'])} second-round trials")
        return 0
    if args.report:  # the pipeline's report stage
        from .study_reports import relpath, report

        from .site import build

        for path in report(args.spec):
            print(f"wrote {relpath(path)}")
        build()  # the results site lists every study's conclusion
        return 0
    return run_study(args.spec, jobs=args.jobs, threads=args.threads)


def run_study(spec: str, *, jobs: int, threads) -> int:
    """Write the study's recipes and pipeline, train its trials side by side, then the rest of its pipeline."""
    from . import paths
    from .pipeline import study_file, write_study
    from .repro import repro
    from .studies import load_study

    study = load_study(spec)
    write_study(study.name)
    dvcfile = os.path.relpath(study_file(study.name), paths.project_root())
    if not study.versus:  # the confirmation stages depend on select, which needs every trial: trials first
        for stage in [f"trials_{study.name}", *([f"exploit_{study.name}"] if study.config["exploit"] else [])]:
            code = repro([f"{dvcfile}:{stage}"], jobs=jobs, threads=threads)
            if code:
                return code
    code = repro([dvcfile], jobs=jobs, threads=threads)
    if code == 0:
        print(f"report: reports/studies/{study.name}.md")
    return code


def cmd_versus(args) -> int:
    """`reprozoo versus BASE NEW ...`: a study spec whose scientific parameter is the recipe, then `reprozoo study`."""
    from .io import atomic_write_text
    from .pipeline import load_params, training_baseline
    from .recipes import load_recipe
    from .studies import specs_dir

    for r in [args.base, *args.new]:
        load_recipe(r)  # a bad name or recipe: one line, before anything is written
    owner = training_baseline(args.base)
    seeds = args.seeds or (load_params()[owner]["seeds"] if owner else [0, 1, 2, 3, 4])
    name = args.name or "__vs__".join([*args.new, args.base])
    path = specs_dir() / f"{name}.yaml"
    text = (f"# Written by `reprozoo versus {args.base} {' '.join(args.new)}`: each recipe's runs with the base's seeds,\n"
            f"# paired by seed against {args.base}. Edit freely; `reprozoo study {name}` re-runs what changed.\n"
            f"question: \"Is {' or '.join(args.new)} better than {args.base}?\"\n"
            f"base: {args.base}\nscientific:\n  recipe: [{', '.join([args.base, *args.new])}]\ntrials: 0\n"
            f"seeds: [{', '.join(map(str, seeds))}]\n")
    if not path.exists():
        atomic_write_text(path, text)
        print(f"wrote {os.path.relpath(path)}")
    return run_study(name, jobs=args.jobs, threads=args.threads)


def cmd_repro(args) -> int:
    from .errors import ConfigError
    from .repro import repro

    options = {}
    for kv in args.option or []:
        if "=" not in kv:
            raise ConfigError("command line", "--option", f"expected KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        options[k] = v
    return repro(args.pipelines, jobs=args.jobs, executor=args.executor, gpus=args.gpus, threads=args.threads,
                 retries=args.retries, dry=args.dry, options=options, run_cache=not args.no_run_cache, detach=args.detach,
                 gpus_per_run=args.gpus_per_run)


def cmd_settle(args) -> int:
    from .settle import settle

    r = settle(args.target, max_seeds=args.max_seeds, stable=args.stable, step=args.step, jobs=args.jobs)
    for label, c in r["looks"][-1]["conclusions"].items():
        st = "" if c["stability"] is None else f", stable {100 * c['stability']:.0f}%"
        print(f"{label:<48} {c['conclusion']}{st} (n={c['n']})  {'settled: ' + c['why'] if c['settled'] else 'FRAGILE'}")
    print(f"stopped: {r['stopped_because']}; seeds {len(r['seeds_start'])} -> {len(r['seeds_end'])}; "
          f"wrote reports/settle/{args.target}.md")
    return 0


def main(argv=None) -> int:
    p = Parser(prog="reprozoo", description="Reproduce published baselines with seed-aware verdicts.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("list", help="show recipes, claims files, families or tricks")
    s.add_argument("what", nargs="?", default="all", choices=["all", "recipes", "claims", "families", "tricks", "ablations", "studies"])
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("prepare", help="prepare datasets into datasets/<name>/")
    s.add_argument("datasets", nargs="+", metavar="DATASET")
    s.add_argument("--force", action="store_true", help="prepare again even if present")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("run", help="train a recipe with one or more seeds into runs/<recipe>/seed<N>/")
    s.add_argument("recipe", help="recipe name (see `reprozoo list recipes`) or path to a recipe YAML")
    s.add_argument("--seed", type=SEED, nargs="+", default=[0], help="seed(s) (default: 0)")
    s.add_argument("--threads", type=THREADS, default=None, help="torch CPU threads (default: $REPROZOO_THREADS or 1; part of bitwise determinism)")
    s.add_argument("--force", action="store_true", help="re-run and replace a finished run")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--record-divergence", action="store_true",
                   help="a run the NaN guard stops ends as {\"infeasible\": why} instead of failing (study trials)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("study", help="a study (recipes/studies/SPEC.yaml): trials on val, best per value, confirmation on test, report")
    s.add_argument("spec", help="study name under recipes/studies/ (see `reprozoo list studies`) or a path")
    s.add_argument("--jobs", "-j", type=_int_at_least(1, "--jobs"), default=2, help="runs at a time (default 2)")
    s.add_argument("--threads", type=THREADS, default=None, help="torch threads per run")
    s.add_argument("--select", action="store_true", help="only pick the best trials (the pipeline's select stage)")
    s.add_argument("--suggest", action="store_true", help="only the TPE round's trials (the pipeline's suggest stage)")
    s.add_argument("--report", action="store_true", help="only the statistics and reports (the pipeline's report stage)")
    s.set_defaults(func=cmd_study)

    s = sub.add_parser("versus", help="is NEW better than BASE? each recipe with BASE's seeds, paired by seed, one report")
    s.add_argument("base", help="the recipe to beat")
    s.add_argument("new", nargs="+", help="one or more recipes to compare with it")
    s.add_argument("--seeds", type=SEED, nargs="+", default=None, help="seeds (default: those params.yaml gives BASE's baseline, else 0-4)")
    s.add_argument("--name", default=None, help="the spec's name under recipes/studies/ (default NEW__vs__BASE)")
    s.add_argument("--jobs", "-j", type=_int_at_least(1, "--jobs"), default=2, help="runs at a time (default 2)")
    s.add_argument("--threads", type=THREADS, default=None, help="torch threads per run")
    s.set_defaults(func=cmd_versus)

    s = sub.add_parser("repro", help="run a DVC pipeline's pending runs side by side (local cores/GPUs, SLURM, Ray), then `dvc repro`")
    s.add_argument("pipelines", nargs="*", metavar="PIPELINE", help="dvc.yaml (default), a baseline name, a dvc.yaml path, `all`, or a DVC stage target")
    s.add_argument("--jobs", "-j", type=_int_at_least(1, "--jobs"), default=2, help="runs at a time (default 2)")
    s.add_argument("--executor", default="local", choices=["local", "slurm", "ray"], help="where runs go (default local)")
    s.add_argument("--gpus", default=None, help="GPU indices to share out, e.g. 0,1,2,3: each run gets its own (CUDA_VISIBLE_DEVICES)")
    s.add_argument("--gpus-per-run", type=_int_at_least(1, "--gpus-per-run"), default=None, help="GPUs each run gets (default 1 with --gpus, else 0); "
                   "slurm/ray ask the scheduler for them")
    s.add_argument("--threads", type=THREADS, default=None, help="torch threads per run (default: $REPROZOO_THREADS or 1, as `dvc repro`)")
    s.add_argument("--retries", type=_int_at_least(0, "--retries"), default=1, help="re-runs of a run killed by a signal, OOM or preemption (default 1); it resumes")
    s.add_argument("--dry", action="store_true", help="list the pending runs, longest first, and stop")
    s.add_argument("--no-run-cache", action="store_true", help="do not restore runs from DVC's run-cache")
    s.add_argument("--detach", action="store_true", help="slurm: submit and exit; the next `reprozoo repro` collects the jobs")
    s.add_argument("--option", "-o", action="append", metavar="KEY=VALUE",
                   help="executor options: slurm: slurm_partition=, slurm_account=, timeout_min=, cluster=local|debug|slurm, "
                        "any other sbatch option; ray: address=")
    s.set_defaults(func=cmd_repro)

    s = sub.add_parser("settle", help="add seeds in rounds until every verdict / adopt decision of a baseline or ablation is settled")
    s.add_argument("target", help="a baseline with a params.yaml section, or an ablation")
    s.add_argument("--max-seeds", type=_int_at_least(2, "--max-seeds"), default=20, help="cap on seeds (default 20)")
    s.add_argument("--stable", type=_finite_float(0.5, 1, "--stable"), default=0.9, help="replication share that counts as stable (default 0.9)")
    s.add_argument("--step", type=_int_at_least(1, "--step"), default=5, help="seeds added per round (default 5)")
    s.add_argument("--jobs", "-j", type=_int_at_least(1, "--jobs"), default=2, help="runs at a time (reprozoo repro)")
    s.set_defaults(func=cmd_settle)

    s = sub.add_parser("compare", help="verdicts of a claims file against the finished runs -> reports/<baseline>.json")
    s.add_argument("baseline", help="claims file name under baselines/ (see `reprozoo list claims`)")
    s.add_argument("--seeds", type=SEED, nargs="+", default=None, help="seeds to use (default: params.yaml's, else all finished)")
    s.add_argument("--by-machine", action="store_true", help="also the mean per machine/environment of each claim's seeds")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("report", help="reports/<baseline>.{md,csv,png} from reports/<baseline>.json")
    s.add_argument("baseline")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("ablate", help="train an ablation's missing runs, then reports/ablations/<spec>.{md,csv,tex,png}")
    s.add_argument("spec", help="ablation name under recipes/ablations/ (see `reprozoo list ablations`) or a path")
    s.add_argument("--no-train", action="store_true", help="only the statistics and reports (what the DVC stage runs)")
    s.add_argument("--threads", type=THREADS, default=None, help="torch CPU threads per run")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_ablate)

    s = sub.add_parser("eval", help="evaluate a published checkpoint through a recipe's test pipeline, with a verdict")
    s.add_argument("recipe")
    s.add_argument("--checkpoint", required=True, help="checkpoint file (state dict, {'state_dict': ...} or MMEngine)")
    s.add_argument("--published", type=_finite_float(0, 100, "--published"), required=True, help="the checkpoint's published number in percent: top-1 accuracy (classification), box AP (detection)")
    s.add_argument("--source", required=True, help="where the published number comes from")
    s.add_argument("--tolerance", type=_finite_float(0, 100, "--tolerance"), default=0.005, help="rounding of the published number (default 0.005: two decimals)")
    s.add_argument("--margin", type=_finite_float(0, 100, "--margin"), default=1.0, help="how far (points) still counts as reproduced (default 1.0)")
    s.add_argument("--name", default=None, help="report name under reports/checks/ (default RECIPE--CHECKPOINT)")
    s.add_argument("--trust-checkpoint", action="store_true",
                   help="allow full unpickling of this file if weights-only loading refuses it: that can run code from the file")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("check", help="sanity checks on a recipe's real data and model -> reports/checks/<recipe>.md")
    s.add_argument("recipe")
    s.add_argument("--seed", type=SEED, default=0)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("curve", help="plot a finished run's loss and eval curves into reports/checks/")
    s.add_argument("recipe")
    s.add_argument("--seed", type=SEED, default=0)
    s.set_defaults(func=cmd_curve)

    s = sub.add_parser("errors", help="what a recipe's finished runs get wrong: per-class metrics, confusion, "
                                      "highest-loss samples, seed disagreement -> reports/errors/<recipe>.md")
    s.add_argument("recipe")
    s.add_argument("--seed", type=SEED, action="append", help="only these seeds (repeatable; default: every finished seed)")
    s.set_defaults(func=cmd_errors)

    s = sub.add_parser("site", help="the results site: every claim, verdict, ablation and check -> reports/site/index.html")
    s.set_defaults(func=cmd_site)

    s = sub.add_parser("fingerprint", help="write the SHA-256 of code files (the pipelines' code_* stages; see docs/usage.md)")
    s.add_argument("out", help="the manifest to write, e.g. .reprozoo/code/mnist1d/code_classification_1234abcd.sha256")
    s.add_argument("files", nargs="+", help="files and folders")
    s.set_defaults(func=cmd_fingerprint)
    s = sub.add_parser("pipeline", help="write the DVC pipeline of a baseline (dvc.yaml or pipelines/<baseline>/dvc.yaml)")
    s.add_argument("baseline", help="claims file name, or `all`")
    s.add_argument("--check", action="store_true", help="only check that the committed files are up to date")
    s.set_defaults(func=cmd_pipeline)

    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also REPROZOO_DEBUG=1)")
    args = p.parse_args(argv)
    debug = args.debug or os.environ.get("REPROZOO_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("reprozoo: interrupted. Finished runs are kept; the same command resumes an unfinished run from its last "
              "checkpoint.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `reprozoo list | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # the one error boundary: every failure is one line unless --debug
        if debug:
            raise
        print(f"reprozoo: error: {describe(e)}", file=sys.stderr)
        return 2


def describe(e: BaseException) -> str:
    """One line for any exception: ours say what to fix; others name the file and the kind of failure."""
    if isinstance(e, ReprozooError):
        return str(e)
    if isinstance(e, OSError) and e.filename:
        hint = {errno.ENOSPC: " (the disk is full: free space and re-run; the run resumes)",
                errno.EACCES: " (no permission: check the folder's owner and mode)",
                errno.EROFS: " (read-only file system)"}.get(e.errno, "")
        return f"{e.filename}: {e.strerror or type(e).__name__}{hint}"
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return (f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__) + \
        " (unexpected; REPROZOO_DEBUG=1 or --debug shows where)"


if __name__ == "__main__":
    sys.exit(main())
