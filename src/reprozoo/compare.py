"""Compare the runs of a baseline's recipes with its claims: `reports/<baseline>.json`."""
from __future__ import annotations

import math

import numpy as np
from dataclasses import asdict

from . import paths
from .claims import format_source, load_baseline
from .errors import ConfigError
from .io import read_json, write_json
from .pipeline import baseline_params, load_params
from .recipes import recipe_names
from .runs import existing_seeds, run_dir
from .stats import summarize, verdict


def _value(recipe: str, seed: int, split: str, metric: str) -> float:
    path = run_dir(recipe, seed) / "metrics.json"
    metrics = read_json(path)
    if split not in metrics:
        raise ConfigError(path, split, "split not in this run's metrics", metrics)
    if metric not in metrics[split]:
        raise ConfigError(path, f"{split}.{metric}", "metric not in this run's metrics", metrics[split])
    return float(metrics[split][metric])


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


NOT_COMPARABLE = "not comparable"


def _splits(recipe: str, seeds: list[int]) -> list[str]:
    return sorted({s for seed in seeds for s in read_json(run_dir(recipe, seed) / "metrics.json")})


def compare(name: str, seeds: list[int] | None = None) -> dict:
    """Verdict per claim over `seeds` (default: params.yaml's seeds for the baseline, else every finished seed),
    and the seed spread of every metric of every recipe the baseline runs."""
    baseline = load_baseline(name, recipe_names())
    extra = []
    if name in load_params():
        seeds = baseline_params(name)["seeds"] if seeds is None else seeds
        extra = [r for r in baseline_params(name)["recipes"] if r not in baseline.recipes]
    out = {"baseline": name, "title": baseline.title, "description": baseline.description, "claims": {},
           "order": [c.label for c in baseline.claims]}  # the JSON's keys are sorted; reports keep the file's order
    envs = {}
    for c in baseline.claims:
        done = existing_seeds(c.recipe)
        used = [s for s in (seeds if seeds is not None else done) if s in done]
        missing = [s for s in (seeds or []) if s not in done]
        splits = _splits(c.recipe, used)
        comparable = not used or c.split in splits
        values = [_value(c.recipe, s, c.split, c.metric) for s in used] if comparable else []
        envs.update({(c.recipe, s): read_json(run_dir(c.recipe, s) / "env.json") for s in used})
        entry = {"recipe": c.recipe, "metric": c.metric, "split": c.split, "published": c.value,
                 "published_std": c.std, "published_n": c.n, "source": format_source(c.source), "notes": c.notes,
                 "seeds": used if comparable else [], "values": values, "missing_seeds": missing}
        if values:
            entry["summary"] = {k: _finite(v) for k, v in asdict(summarize(values)).items()}
        if comparable:
            v = verdict(values, c.value, std=c.std, n=c.n, tolerance=c.tolerance, margin=c.margin).as_dict()
        else:  # e.g. GLUE's test-server numbers: the test labels are withheld, so runs score the dev set
            v = {"verdict": NOT_COMPARABLE, "difference": None, "low": None, "high": None, "df": None,
                 "tolerance": c.tolerance, "margin": c.margin, "seeds_needed": None,
                 "reason": f"the claim is on split {c.split!r} but the runs measure {', '.join(map(repr, splits))}: "
                           f"a number from one split cannot be compared with a number published on another"}
        entry.update({k: _finite(x) for k, x in v.items()})
        out["claims"][c.label] = entry
    out["spread"] = {}
    for r in list(dict.fromkeys([*baseline.recipes, *extra])):
        done = existing_seeds(r)
        used = [s for s in (seeds if seeds is not None else done) if s in done]
        envs.update({(r, s): read_json(run_dir(r, s) / "env.json") for s in used})
        out["spread"][r] = _spread(r, used)
    out["environment"] = _environment(list(envs.values()))
    write_json(paths.reports_dir() / f"{name}.json", out)
    return out


def _spread(recipe: str, seeds: list[int]) -> dict:
    """Per `split/metric`: the values over seeds with their mean, std, min and max."""
    per: dict[str, dict] = {}
    for seed in seeds:
        for split, metrics in read_json(run_dir(recipe, seed) / "metrics.json").items():
            for metric, value in metrics.items():
                per.setdefault(f"{split}/{metric}", {"seeds": [], "values": []})
                per[f"{split}/{metric}"]["seeds"].append(seed)
                per[f"{split}/{metric}"]["values"].append(float(value))
    for d in per.values():
        x = d["values"]
        d.update(n=len(x), mean=sum(x) / len(x), min=min(x), max=max(x),
                 std=_finite(float(np.std(x, ddof=1))) if len(x) > 1 else None)
    return per


def _environment(envs: list[dict]) -> dict:
    if not envs:
        return {}
    pick = lambda key: sorted({str(e.get(key)) for e in envs})  # noqa: E731
    return {
        "runs": len(envs),
        "devices": pick("device"),
        "torch": sorted({e["packages"].get("torch", "?") for e in envs}),
        "threads": sorted({e["determinism"]["threads"] for e in envs}),
        "git_revisions": pick("git_revision"),
        "train_wall_seconds_total": round(sum(e["wall_seconds"] for e in envs), 1),
        "train_wall_seconds_max": round(max(e["wall_seconds"] for e in envs), 1),
        "peak_rss_mib_max": max(e["peak_rss_mib"] for e in envs),
        "commands": sorted({e["command"] for e in envs})[:3],
        "latest_run_utc": max(e["started_utc"] for e in envs),
    }
