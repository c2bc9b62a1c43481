"""Compare the runs of a baseline's recipes with its claims: `reports/<baseline>.json`."""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from . import paths
from .claims import format_source
from .errors import ConfigError
from .io import read_json, write_json
from .pipeline import load_baseline_params
from .recipes import recipe_names
from .runs import existing_seeds, metric_value, run_dir
from .stats import STABLE, stability, summarize, verdict


ENV_KEYS = {"packages": dict, "determinism": dict, "wall_seconds": (int, float), "peak_rss_mib": (int, float),
            "command": str, "started_utc": str}


def checked_run_file(path, recipe: str, seed: int) -> dict:
    """A run's metrics.json ({split: {metric: number}}) or env.json as `runs.py` writes it, else a ConfigError
    naming the file and the command that writes it again."""
    data = read_json(path)
    fix = f"`reprozoo run {recipe} --seed {seed} --force` writes it again"
    if path.name == "metrics.json":
        ok = isinstance(data, dict) and all(isinstance(m, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in m.values()) for m in data.values())
        if not ok:
            raise ConfigError(path, None, f"not {{split: {{metric: finite number}}}} as a run writes it; {fix}")
    elif not isinstance(data, dict) or (bad := [k for k, t in ENV_KEYS.items() if not isinstance(data.get(k), t)]):
        raise ConfigError(path, None, f"not a run's env.json (missing or wrong: {bad if isinstance(data, dict) else 'everything'}); {fix}")
    return data


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


NOT_COMPARABLE = "not comparable"


def compare(name: str, seeds: list[int] | None = None) -> dict:
    """Verdict per claim over `seeds` (default: params.yaml's seeds for the baseline, else every finished seed),
    and the seed spread of every metric of every recipe the baseline runs."""
    baseline = load_baseline_params(name, recipe_names())  # the claims file and its params.yaml section, read once
    if seeds is None and baseline.seeds is not None:
        seeds = list(baseline.seeds)
    files = {}  # (recipe, seed, file) -> its JSON, each read once

    def run_file(recipe: str, seed: int, file: str) -> dict:
        if (recipe, seed, file) not in files:
            files[recipe, seed, file] = checked_run_file(run_dir(recipe, seed) / file, recipe, seed)
        return files[recipe, seed, file]

    def run_metrics(recipe: str, seed: int) -> dict:
        return run_file(recipe, seed, "metrics.json")

    out = {"baseline": name, "title": baseline.title, "description": baseline.description, "claims": {},
           "order": [c.label for c in baseline.claims]}  # the JSON's keys are sorted; reports keep the file's order
    for c in baseline.claims:
        done = existing_seeds(c.recipe)
        used = [s for s in (seeds if seeds is not None else done) if s in done]
        missing = [s for s in (seeds or []) if s not in done]
        splits = sorted({split for s in used for split in run_metrics(c.recipe, s)})
        comparable = not used or c.split in splits
        values = [metric_value(c.recipe, s, c.split, c.metric, run_metrics(c.recipe, s)) for s in used] if comparable else []
        entry = {"recipe": c.recipe, "metric": c.metric, "split": c.split, "published": c.value,
                 "published_std": c.std, "published_n": c.n, "source": format_source(c.source), "notes": c.notes,
                 "seeds": used if comparable else [], "values": values, "missing_seeds": missing}
        if values:
            entry["summary"] = {k: _finite(v) for k, v in asdict(summarize(values)).items()}
        if comparable:
            v = verdict(values, c.value, std=c.std, n=c.n, tolerance=c.tolerance, margin=c.margin).as_dict()
            v["stability"] = stability(values, c.value, std=c.std, n=c.n, tolerance=c.tolerance, margin=c.margin)
            v["fragile"] = v["stability"] is not None and v["stability"] < STABLE
        else:  # e.g. GLUE's test-server numbers: the test labels are withheld, so runs score the dev set
            v = {"verdict": NOT_COMPARABLE, "difference": None, "low": None, "high": None, "df": None,
                 "tolerance": c.tolerance, "margin": c.margin, "seeds_needed": None, "stability": None, "fragile": False,
                 "reason": f"the claim is on split {c.split!r} but the runs measure {', '.join(map(repr, splits))}: "
                           f"a number from one split cannot be compared with a number published on another"}
        entry.update({k: _finite(x) for k, x in v.items()})
        entry["machines"] = _by_machine({s: run_file(c.recipe, s, "env.json") for s in entry["seeds"]},
                                        dict(zip(entry["seeds"], values)))
        out["claims"][c.label] = entry
    out["spread"], envs = {}, {}  # every recipe of the baseline, claimed or not
    for r in baseline.all_recipes:
        done = existing_seeds(r)
        used = [s for s in (seeds if seeds is not None else done) if s in done]
        envs[r] = [run_file(r, s, "env.json") for s in used]
        out["spread"][r] = _spread({s: run_metrics(r, s) for s in used})
    out["environment"] = _environment(envs)
    write_json(paths.reports_dir() / f"{name}.json", out)
    return out


def machine(env: dict) -> str:
    """What a run's numbers depend on beyond its recipe and seed: the CPU or GPU (its model where env.json
    records one), the platform, and the torch build. Same seed, another of these: other bits."""
    if env.get("gpu"):
        device = f"{', '.join(env['gpu'])} (CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, driver {env.get('driver', '?')})"
    elif env.get("cpu_model"):
        device = f"{env['cpu_model']} ({env.get('cpu_capability', '?')} kernels)"
    else:
        device = env.get("device", "?")
    return f"{device}; {env.get('platform', '?')}; torch {env.get('packages', {}).get('torch', '?')}"


ENVIRONMENT = ("machine", "uv.lock", "dataset")


def environment(env: dict) -> dict[str, str]:
    """Everything beyond the recipe and seed that a run's bits depend on, by name: the machine (`machine`),
    the locked package set (uv.lock) and the prepared dataset."""
    return {"machine": machine(env), "uv.lock": str(env.get("uv_lock_sha256") or "?")[:12],
            "dataset": str((env.get("dataset") or {}).get("sha256") or "?")[:12]}


def _by_machine(envs: dict[int, dict], values: dict[int, float]) -> list[dict]:
    """The seeds grouped by `environment`, with each group's mean and what sets it apart from the others
    (`differs`): one group is the normal case."""
    groups: dict[tuple, list[int]] = {}  # the environment's values, in ENVIRONMENT order -> its seeds
    for seed, env in envs.items():
        groups.setdefault(tuple(environment(env).values()), []).append(seed)
    differs = [k for i, k in enumerate(ENVIRONMENT) if len({g[i] for g in groups}) > 1]
    return [{"machine": g[0], "environment": dict(zip(ENVIRONMENT, g)), "differs": differs, "seeds": seeds,
             "n": len(seeds), "mean": float(np.mean([values[s] for s in seeds]))} for g, seeds in sorted(groups.items())]


def _spread(by_seed: dict[int, dict]) -> dict:
    """Per `split/metric`: the values over seeds with their mean, std, min and max."""
    per: dict[str, dict] = {}
    for seed, run in by_seed.items():
        for split, metrics in run.items():
            for metric, value in metrics.items():
                per.setdefault(f"{split}/{metric}", {"seeds": [], "values": []})
                per[f"{split}/{metric}"]["seeds"].append(seed)
                per[f"{split}/{metric}"]["values"].append(float(value))
    for d in per.values():
        x = d["values"]
        d.update(n=len(x), mean=sum(x) / len(x), min=min(x), max=max(x),
                 std=_finite(float(np.std(x, ddof=1))) if len(x) > 1 else None)
    return per


def wall_by_recipe(envs: dict[str, list[dict]]) -> dict[str, float]:
    """Mean training wall seconds per run of each recipe (recipe -> its runs' `env.json`): committed with
    the report, so `reprozoo repro` on a clone without runs can still start the longest work first."""
    return {r: round(sum(e["wall_seconds"] for e in es) / len(es), 1) for r, es in sorted(envs.items()) if es}


def _environment(by_recipe: dict[str, list[dict]]) -> dict:
    """What the runs (recipe -> its runs' `env.json`) ran on, and how long they took."""
    envs = [e for es in by_recipe.values() for e in es]
    if not envs:
        return {}
    pick = lambda key: sorted({str(e.get(key)) for e in envs})  # noqa: E731
    return {
        "runs": len(envs),
        "devices": pick("device"),
        "cpu_models": sorted({e["cpu_model"] for e in envs if e.get("cpu_model")}),  # recorded since 2026-12-02
        "torch": sorted({e["packages"].get("torch", "?") for e in envs}),
        "threads": sorted({e["determinism"]["threads"] for e in envs}),
        "git_revisions": pick("git_revision"),
        "train_wall_seconds_total": round(sum(e["wall_seconds"] for e in envs), 1),
        "train_wall_seconds_max": round(max(e["wall_seconds"] for e in envs), 1),
        "peak_rss_mib_max": max(e["peak_rss_mib"] for e in envs),
        "commands": sorted({e["command"] for e in envs})[:3],
        "latest_run_utc": max(e["started_utc"] for e in envs),
        "train_wall_seconds_by_recipe": wall_by_recipe(by_recipe),
    }
