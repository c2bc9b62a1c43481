"""Compare the runs of a baseline's recipes with its claims: `reports/<baseline>.json`."""
from __future__ import annotations

import math
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


def compare(name: str, seeds: list[int] | None = None) -> dict:
    """Verdict per claim over `seeds` (default: params.yaml's seeds for the baseline, else every finished seed)."""
    baseline = load_baseline(name, recipe_names())
    if seeds is None and name in load_params():
        seeds = baseline_params(name)["seeds"]
    out = {"baseline": name, "title": baseline.title, "description": baseline.description, "claims": {},
           "order": [c.label for c in baseline.claims]}  # the JSON's keys are sorted; reports keep the file's order
    envs = []
    for c in baseline.claims:
        done = existing_seeds(c.recipe)
        used = [s for s in (seeds if seeds is not None else done) if s in done]
        missing = [s for s in (seeds or []) if s not in done]
        values = [_value(c.recipe, s, c.split, c.metric) for s in used]
        envs += [read_json(run_dir(c.recipe, s) / "env.json") for s in used]
        entry = {"recipe": c.recipe, "metric": c.metric, "split": c.split, "published": c.value,
                 "published_std": c.std, "published_n": c.n, "source": format_source(c.source), "notes": c.notes,
                 "seeds": used, "values": values, "missing_seeds": missing}
        if values:
            entry["summary"] = {k: _finite(v) for k, v in asdict(summarize(values)).items()}
        v = verdict(values, c.value, std=c.std, n=c.n, tolerance=c.tolerance, margin=c.margin)
        entry.update({k: _finite(x) for k, x in v.as_dict().items()})
        out["claims"][c.label] = entry
    out["environment"] = _environment(envs)
    write_json(paths.reports_dir() / f"{name}.json", out)
    return out


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
