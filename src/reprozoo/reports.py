"""Report writers: `reports/<baseline>.md`, `.csv` (one row per claim), `_seeds.csv` and `.png`."""
from __future__ import annotations

import csv
import io

from . import paths
from .errors import ConfigError
from .io import atomic_write_bytes, atomic_write_text, bounded_text, read_json
from .pipeline import DEFAULT_BASELINE, pipeline_file

COLUMNS = ["recipe", "metric", "split", "published", "source", "n", "mean", "std", "ci_low", "ci_high",
           "difference", "interval_low", "interval_high", "tolerance", "margin", "verdict", "stability", "seeds_needed"]


def _claims(result: dict) -> list[dict]:
    return [result["claims"][k] for k in result.get("order", result["claims"])]


def _fmt(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def stable_note(stability: float | None) -> str:
    """', stable 87%' (or ', FRAGILE: stable 62%' under the threshold) for a verdict or an adopt decision."""
    from .stats import STABLE

    if stability is None:
        return ""
    return f", {'**fragile**: ' if stability < STABLE else ''}stable {100 * stability:.0f}%"


def summary_rows(result: dict) -> list[dict]:
    rows = []
    for c in _claims(result):
        s = c.get("summary") or {}
        rows.append({"recipe": c["recipe"], "metric": c["metric"], "split": c["split"], "published": c["published"],
                     "source": c["source"], "n": s.get("n", 0), "mean": s.get("mean"), "std": s.get("std"),
                     "ci_low": s.get("ci_low"), "ci_high": s.get("ci_high"), "difference": c["difference"],
                     "interval_low": c["low"], "interval_high": c["high"], "tolerance": c["tolerance"],
                     "margin": c["margin"], "verdict": c["verdict"], "seeds_needed": c["seeds_needed"],
                     "stability": c.get("stability"), "fragile": c.get("fragile", False),
                     "reason": c.get("reason", "")})
    return rows


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    return buf.getvalue()


def repro_command(name: str) -> str:
    return "uv run dvc repro" if name == DEFAULT_BASELINE else f"uv run dvc repro {pipeline_file(name).relative_to(paths.project_root())}"


def markdown(result: dict) -> str:
    name = result["baseline"]
    rows = summary_rows(result)
    seeds = _all_seeds(result)
    lines = [f"# {result['title']}", "", result["description"], "",
             f"Produced by `{repro_command(name)}` (stages `compare_{name}`, `report_{name}`); "
             f"raw numbers in [`{name}.json`]({name}.json), per-seed values in [`{name}_seeds.csv`]({name}_seeds.csv).", "",
             "| recipe | metric (split) | published | ours: mean ± std (n) | 95% CI of mean | ours − published [95% interval] | verdict |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        verdict = f"**{r['verdict']}**" + stable_note(r.get("stability"))
        if r["verdict"] == "not comparable":
            verdict += f": {r['reason']}"
        elif r["verdict"] == "inconclusive":
            verdict += f" (about {r['seeds_needed']} seeds would settle it)" if r["seeds_needed"] else " (more seeds cannot settle it)"
        lines.append(f"| {r['recipe']} | {r['metric']} ({r['split']}) | {r['published']:g} | "
                     f"{_fmt(r['mean'])} ± {_fmt(r['std'])} ({r['n']}) | [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | "
                     f"{_fmt(r['difference'], 2)} [{_fmt(r['interval_low'])}, {_fmt(r['interval_high'])}] | {verdict} |")
    if not rows:
        lines[-2:] = ["This baseline makes no claim: it measures the seed spread below."]
    panels = _claims(result) or _spread_panels(result)
    seeds = seeds or sorted({s for p in (result.get("spread") or {}).values() for d in p.values() for s in d["seeds"]})
    lines += ["", f"![per-seed results]({name}.png)", "", "## Per seed", "",
              "| recipe | " + ("" if rows else "metric (split) | ") + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + ("" if rows else "---|") + "---:|" * len(seeds)]
    for c in panels:
        vals = dict(zip(c["seeds"], c["values"]))
        lines.append(f"| {c['recipe']} | " + ("" if rows else f"{c['metric']} ({c['split']}) | ") +
                     " | ".join(_fmt(vals.get(s)) for s in seeds) + " |")
    lines += _spread_lines(result) + machine_lines(result)
    if rows:
        lines += ["", "## Sources", ""]
        for c in _claims(result):
            lines.append(f"- {c['recipe']}: {c['source']}" + (f". {c['notes']}" if c["notes"] else ""))
        lines += ["", "## How to read the verdict", "",
                  "The interval is for ours − published: our seed spread plus the published value's own (its std "
                  "over its runs when the source gives one; otherwise it is treated as one more run from our "
                  "distribution, i.e. a prediction interval). `below`/`above`: the whole interval lies beyond "
                  "±tolerance. `reproduced`: the whole interval lies within ±(tolerance + margin). Otherwise "
                  "`inconclusive`; `not comparable`: the claim is on a split the runs do not measure. "
                  "`stable N%`: in N% of 2000 simulated replications (as many seeds again, normal with our mean and "
                  "std: what another machine or other seeds would give) the rule reaches the same verdict; under 90% "
                  "it is marked **fragile** (`reprozoo settle` adds seeds until it is not). "
                  "Full rule: docs/statistics.md, section \"Verdicts\".", ""]
    else:
        lines.append("")
    env = result.get("environment") or {}
    if env:
        lines += ["## Environment", "",
                  f"- runs: {env['runs']}; device: {', '.join(env['devices'])}; torch {', '.join(env['torch'])}; "
                  f"CPU threads per run: {', '.join(map(str, env['threads']))}"
                  + (f"; CPU model(s): {', '.join(env['cpu_models'])}" if env.get("cpu_models") else ""),
                  f"- training wall time: {env['train_wall_seconds_total']} s summed over runs "
                  f"(longest run {env['train_wall_seconds_max']} s); peak memory of a run: {env['peak_rss_mib_max']} MiB",
                  f"- git revision(s) of the runs: {', '.join(r[:12] for r in env['git_revisions'])}",
                  f"- run command, e.g.: `{env['commands'][0]}`", ""]
    return "\n".join(lines)


def machine_lines(result: dict) -> list[str]:
    """A warning, with per-machine means, for each claim whose seeds ran on more than one machine."""
    mixed = [c for c in _claims(result) if len(c.get("machines") or []) > 1]
    if not mixed:
        return []
    lines = ["", "## Runs from several machines", "",
             "The same seed gives other bits on another CPU or torch build, so these seeds are not one machine's "
             "sample; compare the means per machine (`reprozoo compare NAME --by-machine`).", "",
             "| recipe | differs in | machine | uv.lock | dataset | seeds | mean |", "|---|---|---|---|---|---|---:|"]
    for c in mixed:
        for m in c["machines"]:
            env = m.get("environment") or {}
            lines.append(f"| {c['recipe']} | {', '.join(m.get('differs') or ['machine'])} | {m['machine']} | {env.get('uv.lock', '?')} "
                         f"| {env.get('dataset', '?')} | {', '.join(map(str, m['seeds']))} | {_fmt(m['mean'])} |")
    return lines


def _spread_lines(result: dict) -> list[str]:
    """Every metric of every recipe over seeds: how far seeds alone move each number."""
    spread = result.get("spread") or {}
    if not any(spread.values()):
        return []
    lines = ["", "## Seed spread", "", "Every metric the runs report, over the seeds above (max − min is the range seeds alone produce).", "",
             "| recipe | split/metric | n | mean ± std | min | max | max − min |", "|---|---|---:|---:|---:|---:|---:|"]
    for recipe, per in spread.items():
        for key, d in per.items():
            lines.append(f"| {recipe} | {key} | {d['n']} | {_fmt(d['mean'])} ± {_fmt(d['std'])} | {_fmt(d['min'])} | "
                         f"{_fmt(d['max'])} | {_fmt(d['max'] - d['min'])} |")
    return lines


def _all_seeds(result):
    return sorted({s for c in _claims(result) for s in c["seeds"]})


def _spread_panels(result: dict) -> list[dict]:
    """Without claims: one panel per recipe and metric (losses left out)."""
    return [{"recipe": r, "split": k.split("/")[0], "metric": k.split("/")[1], "values": d["values"], "seeds": d["seeds"], "published": None}
            for r, per in (result.get("spread") or {}).items() for k, d in per.items() if not k.endswith("/loss")]


def plot(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    claims = _claims(result) or _spread_panels(result)
    fig, axes = plt.subplots(1, max(1, len(claims)), figsize=(2.6 * len(claims) + 0.6, 3.4), squeeze=False)
    colors = {"reproduced": "tab:green", "below": "tab:red", "above": "tab:orange", "inconclusive": "tab:gray",
              "not comparable": "tab:gray", "": "black"}
    for ax, c in zip(axes[0], claims):
        if c["published"] is None:  # a seed-spread panel: no published value to draw
            ax.scatter([0.04 * (i - (len(c["values"]) - 1) / 2) for i in range(len(c["values"]))], c["values"], s=18, color="black")
            ax.set_xlim(-0.5, 0.5), ax.set_xticks([])
            ax.set_title(c["recipe"], fontsize=8)
            ax.set_ylabel(f"{c['metric']} ({c['split']})", fontsize=8)
            continue
        pub, tol = c["published"], c["tolerance"]
        ax.axhspan(pub - tol, pub + tol, color="tab:blue", alpha=0.15, lw=0)
        ax.axhline(pub, color="tab:blue", lw=1.5, label="published")
        xs = [0.0 + 0.04 * (i - (len(c["values"]) - 1) / 2) for i in range(len(c["values"]))]
        ax.scatter(xs, c["values"], s=18, color="black", zorder=3, label="seeds")
        s = c.get("summary")
        if s and s["ci_low"] is not None:
            ax.errorbar([0.25], [s["mean"]], yerr=[[s["mean"] - s["ci_low"]], [s["ci_high"] - s["mean"]]],
                        fmt="o", color=colors[c["verdict"]], capsize=4, label="mean, 95% CI")
        ax.set_xlim(-0.5, 0.75)
        ax.set_xticks([])
        ax.set_title(f"{c['recipe']}\n{c['verdict']}", fontsize=9, color=colors[c["verdict"]])
        ax.set_ylabel(f"{c['metric']} ({c['split']})", fontsize=8)
        ax.tick_params(labelsize=8)
    if _claims(result):
        axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(result["title"], fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # no version stamp: same input, same bytes
    plt.close(fig)
    return buf.getvalue()


def report(name: str) -> list:
    result = read_json(paths.reports_dir() / f"{name}.json")
    out = paths.reports_dir()
    seeds_rows = [{"recipe": c["recipe"], "metric": c["metric"], "seed": s, "value": v, "published": c["published"]}
                  for c in _claims(result) for s, v in zip(c["seeds"], c["values"])]
    return [
        atomic_write_text(out / f"{name}.md", markdown(result)),
        atomic_write_text(out / f"{name}.csv", _csv(summary_rows(result), COLUMNS)),
        atomic_write_text(out / f"{name}_seeds.csv", _csv(seeds_rows, ["recipe", "metric", "seed", "value", "published"])),
        atomic_write_bytes(out / f"{name}.png", plot(result)),
        write_index(),
    ]


def write_index():
    """`reports/README.md`: every verdict table, ablation and checkpoint check, newest first, with links."""
    out = paths.reports_dir()
    entries = []
    for j in sorted(out.glob("*.json")):
        r = read_json(j)
        if "baseline" in r and (out / f"{j.stem}.md").exists():
            verdicts = ", ".join(f"{c['recipe']}: {c['verdict']}" for c in _claims(r)) or \
                "no claim: seed spread of " + ", ".join(r.get("spread") or {})
            entries.append(((r.get("environment") or {}).get("latest_run_utc", ""), "verdicts" if _claims(r) else "seed spread",
                            f"[{r['title']}]({j.stem}.md) — {verdicts}"))
    for j in sorted((out / "ablations").glob("*.json")):
        r = read_json(j)
        if (out / "ablations" / f"{j.stem}.md").exists():
            adopted = [row["trick"] for rows in r["modes"].values() for row in rows if row["adopt"] == "yes"]
            entries.append((r["latest_run_utc"], "ablation", f"[{r['ablation']}: {r['description']}](ablations/{j.stem}.md) — "
                            f"{', '.join(r['modes'])}; adopt: {', '.join(dict.fromkeys(adopted)) or 'none'}"))
    for j in sorted((out / "checks").glob("*.json")):
        r = read_json(j)
        if "checkpoint" in r and (out / "checks" / f"{j.stem}.md").exists():
            name, value = ("top-1", r["accuracy"]) if "accuracy" in r else (r["metric"], r["value"])
            entries.append((r.get("evaluated_utc", ""), "checkpoint", f"[`{r['checkpoint']}` through `{r['recipe']}`](checks/{j.stem}.md) — "
                            f"{name} {value:.2f} on {r['total']} images vs published {r['published']:.2f}: {r['verdict']}"))
    for j in sorted((out / "settle").glob("*.json")):
        r = read_json(j)
        if (out / "settle" / f"{j.stem}.md").exists():
            entries.append((r.get("finished_utc", ""), "settle", f"[settling `{r['target']}`](settle/{j.stem}.md) — "
                            f"seeds {len(r['seeds_start'])} -> {len(r['seeds_end'])}; {r['stopped_because']}"))
    entries.sort(key=lambda e: e[0], reverse=True)
    lines = ["# Reports", "", "Every baseline verdict table, ablation, settle run and published-checkpoint check, newest "
             "runs first. Written by `reprozoo report`, `reprozoo ablate` (the pipeline's `report_*` and `ablate_*` "
             "stages), `reprozoo settle` and `reprozoo eval`.", "",
             "| latest run (UTC) | kind | report |", "|---|---|---|"]
    lines += [f"| {t or '–'} | {kind} | {text} |" for t, kind, text in entries]
    return atomic_write_text(out / "README.md", "\n".join(lines) + "\n")


def _tsv(path) -> list[tuple[int, float]]:
    """A DVCLive curve (step, value); a damaged one is a ConfigError naming it."""
    try:
        return [(int(float(a)), float(b)) for a, b in (r.split("\t")[:2] for r in bounded_text(path, "curve", 1 << 28).splitlines()[1:])]
    except ValueError as e:
        raise ConfigError(path, None, f"not a DVCLive curve (step<TAB>value rows): {e}") from None


def curve_report(recipe: str, seed: int) -> list:
    """`reports/checks/<recipe>-seed<N>-curve.{md,png}`: a finished run's training loss and eval metric curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .runs import run_dir

    from .compare import checked_run_file

    d = run_dir(recipe, seed)
    metrics_dir = d / "dvclive/plots/metrics"
    env, final = checked_run_file(d / "env.json", recipe, seed), checked_run_file(d / "metrics.json", recipe, seed)
    # the eval metric is the run's first test metric (accuracy, Dice, AP...); grad_norm where the run logs it
    metric = next(iter(final.get("test", {})), "accuracy")
    wanted = ("loss", metric, "grad_norm", "lr")
    found = {p.stem: p for p in metrics_dir.glob("*.tsv")}
    curves = {k: _tsv(found[k]) for k in wanted if k in found}
    if not curves:
        raise ConfigError(metrics_dir, None, f"no curves ({', '.join(w + '.tsv' for w in wanted)}) in this run")
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), squeeze=False)
    for ax, (name, pts) in zip(axes[0], curves.items()):
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o" if len(pts) < 30 else None, ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"{recipe}, seed {seed}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    name = f"{recipe}-seed{seed}-curve"
    out = paths.reports_dir() / "checks"
    acc = curves.get(metric, [])
    lines = [f"# Training curve: `{recipe}`, seed {seed}", "",
             f"Run: `{env['command']}` ({env['wall_seconds']} s on {env['device']}, {env['determinism']['threads']} thread(s), "
             f"git {str(env['git_revision'])[:12]}); written by `reprozoo curve {recipe} --seed {seed}`.", "",
             f"![curves]({name}.png)", "", f"| iteration | eval {metric} |", "|---:|---:|"]
    lines += [f"| {s} | {v:.2f} |" for s, v in acc]
    lines += ["", f"Final metrics: `{json_line(final)}`", ""]
    return [atomic_write_bytes(out / f"{name}.png", buf.getvalue()), atomic_write_text(out / f"{name}.md", "\n".join(lines))]


def json_line(obj) -> str:
    import json

    return json.dumps(obj, sort_keys=True)
