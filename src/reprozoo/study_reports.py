"""A study's statistics and reports: confirmation runs paired by seed (the ablation engine's statistics and
its `adopt?`), axis and isolation plots, the edge warning, a one-sentence conclusion and a diagnosis of
every confirmation run's curves -> reports/studies/<spec>.{json,md,csv} and <spec>_{axis,isolation}.png."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict

import numpy as np

from . import paths
from .errors import ConfigError
from .io import atomic_write_bytes, atomic_write_text, read_json, write_json
from .studies import Study, confirm_runs, load_study, reports_dir


def _split_of(metrics: dict) -> str:
    return "test" if "test" in metrics else next(iter(metrics))


def _values(study: Study, run: str) -> dict[int, float]:
    from .runs import run_dir

    out = {}
    for s in study.config["seeds"]:
        f = run_dir(run, s) / "metrics.json"
        if not f.exists():
            raise ConfigError(study.path, "seeds", f"{run} has no finished run for seed {s} (`reprozoo study {study.name}` trains it)")
        m = read_json(f)
        split = _split_of(m)
        if study.config["metric"] not in m[split]:
            raise ConfigError(f, f"{split}.{study.config['metric']}", "not in this run's metrics", m[split])
        out[s] = float(m[split][study.config["metric"]])
    return out


def diagnose(curves_dir, total_steps: int | None = None) -> dict:
    """What a run's DVCLive curves say: still improving at the end, an eval peak before 80% of training
    (overfitting), a noisy tail, gradient-norm spikes and their 90th percentile (a `clip_grad` to try)."""
    metrics = curves_dir / "plots" / "metrics"
    out: dict = {}
    acc = _tsv(metrics / "accuracy.tsv")
    if len(acc) >= 5:
        steps, vals = acc[:, 0], acc[:, 1]
        total = total_steps or steps[-1]
        tail = vals[steps >= 0.8 * total] if (steps >= 0.8 * total).sum() >= 3 else vals[-3:]
        slope = np.polyfit(np.arange(len(tail)), tail, 1)[0] if len(tail) >= 3 else 0.0
        out["peak_step"] = int(steps[int(np.argmax(vals))])
        out["final"] = float(vals[-1])
        out["tail_std"] = float(tail.std(ddof=1)) if len(tail) > 1 else 0.0
        out["still_improving"] = bool(slope > 0 and slope * (len(tail) - 1) > max(out["tail_std"], 1e-9))
        out["overfitting"] = bool(out["peak_step"] < 0.8 * total and vals.max() - vals[-1] > max(out["tail_std"], 1e-9))
        out["noisy_tail"] = bool(out["tail_std"] > 1.0)
    gn = _tsv(metrics / "grad_norm.tsv")
    if len(gn):
        norms = gn[:, 1]
        med = float(np.median(norms))
        out["grad_norm_p90"] = float(np.percentile(norms, 90))
        out["grad_norm_max"] = float(norms.max())
        out["grad_norm_spikes"] = int((norms > 10 * med).sum()) if med > 0 else 0
    return out


def _tsv(path) -> np.ndarray:
    if not path.exists():
        return np.zeros((0, 2))
    rows = [line.split("\t")[:2] for line in path.read_text().splitlines()[1:] if line.strip()]
    return np.array([[float(a), float(b)] for a, b in rows]) if rows else np.zeros((0, 2))


def _diagnosis_text(d: dict) -> str:
    notes = []
    if d.get("still_improving"):
        notes.append("still improving at the end (train longer?)")
    if d.get("overfitting"):
        notes.append(f"peaked at step {d['peak_step']} (before 80% of training)")
    if d.get("noisy_tail"):
        notes.append(f"noisy tail (std {d['tail_std']:.2f})")
    if d.get("grad_norm_spikes"):
        notes.append(f"{d['grad_norm_spikes']} gradient-norm spikes (>10x median)")
    if "grad_norm_p90" in d:
        notes.append(f"grad-norm p90 {d['grad_norm_p90']:.3g} (a clip_grad max_norm to try)")
    return "; ".join(notes) or "no curves"


def analyze(study: Study) -> dict:
    from .ablation_stats import compare_rows
    from .runs import run_dir
    from .stats import summarize

    runs = confirm_runs(study)
    values = {label: _values(study, run) for label, run in runs.items()}
    labels = study.labels
    ref = labels[0]
    rows = compare_rows([(runs[lab], runs[ref], values[lab], values[ref]) for lab in labels[1:]],
                        higher_is_better=study.config["higher_is_better"])
    trials = None if study.versus else read_json(reports_dir() / f"{study.name}_trials.json")
    result = {"study": study.name, "question": study.config["question"], "base": study.config["base"],
              "scientific": study.key, "values": labels, "metric": study.config["metric"],
              "higher_is_better": study.config["higher_is_better"], "decides_on": study.decides_on(),
              "seeds": study.config["seeds"], "nuisance": study.nuisance, "trials_per_value": study.config["trials"],
              "sampler": study.config["sampler"], "exploit": study.config["exploit"], "runs": runs, "confirmation": {}, "comparisons": [],
              "trials": trials["trials"] if trials else [], "edge_warnings": trials["edge_warnings"] if trials else [],
              "best": trials["best"] if trials else {}}
    for lab in labels:
        s = summarize(list(values[lab].values()))
        diag = {str(seed): diagnose(run_dir(runs[lab], seed) / "dvclive") for seed in study.config["seeds"]}
        result["confirmation"][lab] = {"run": runs[lab], "values": [values[lab][s_] for s_ in study.config["seeds"]],
                                       **{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(s).items()},
                                       "diagnosis": diag}
    for lab, r in zip(labels[1:], rows):
        result["comparisons"].append({"value": lab, "reference": ref, **{k: v for k, v in asdict(r).items()
                                                                        if k not in ("arm", "reference", "seeds")}})
    result["published"] = _published(study)
    result = _finite(result)  # a bootstrap over 2 seeds, say, is undefined: null in the JSON, n/a in the text
    result["conclusion"] = conclusion(result)
    return result


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _s(x, fmt: str = "+.2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _published(study: Study) -> dict | None:
    """The base recipe's published claim (versus: the first recipe's), if a claims file has one."""
    from .claims import list_baselines, load_baseline

    base = study.values[0] if study.key == "recipe" else study.config["base"]
    for b in list_baselines():
        for c in load_baseline(b).claims:
            if c.recipe == base and c.metric == study.config["metric"]:
                return {"recipe": base, "value": c.value, "split": c.split, "baseline": b}
    return None


def conclusion(result: dict) -> str:
    """One sentence, with the trials and seeds it rests on."""
    n = len(result["seeds"])
    parts = []
    for c in result["comparisons"]:
        parts.append(f"{c['value']} vs {c['reference']}: {_s(c['difference'])} [{_s(c['ci_low'])}, {_s(c['ci_high'])}] "
                     f"{result['metric']} points over {n} seeds, adopt? {c['adopt']}")
    extra = f" + {result['exploit']['trials']} TPE" if result.get("exploit") else ""
    tuned = (f"each value's {' and '.join(result['nuisance'])} tuned over {result['trials_per_value']} {result['sampler']}{extra} "
             f"trials on {result['decides_on']}, " if result["trials_per_value"] else "")
    return f"With {tuned}" + "; ".join(parts) + "." if tuned else "; ".join(parts).capitalize() + "."


# ---------------------------------------------------------------------------------------------- plots

def axis_data(result: dict) -> dict:
    """Per nuisance key: per scientific value, the (x, validation metric) of feasible trials and the x of
    infeasible ones."""
    out: dict = {}
    for key in result["nuisance"]:
        out[key] = {}
        for lab in result["values"]:
            rows = [t for t in result["trials"] if t["label"] == lab]
            out[key][lab] = {"ok": [(t["point"][key], t["value"]) for t in rows if t["status"] == "ok"],
                             "infeasible": [t["point"][key] for t in rows if t["status"] == "infeasible"]}
    return out


def isolation_data(result: dict) -> dict:
    """Per scientific value: its best trial's validation metric and the confirmation mean with its CI."""
    best = {t["trial"]: t["value"] for t in result["trials"]}
    return {lab: {"best_val": best.get(result["best"].get(lab)), "confirm_mean": c["mean"],
                  "confirm_ci": (c["ci_low"], c["ci_high"])} for lab, c in result["confirmation"].items()}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})  # no version stamp: same bytes on re-run
    plt.close(fig)
    return buf.getvalue()


def axis_plot(result: dict) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = axis_data(result)
    if not data:
        return None
    fig, axes = plt.subplots(1, len(data), figsize=(5 * len(data), 3.8), squeeze=False)
    for ax, (key, per) in zip(axes[0], data.items()):
        kind = next(iter(result["nuisance"][key]))
        lows = [v for d in per.values() for _, v in d["ok"]]
        floor = min(lows) if lows else 0.0
        for i, (lab, d) in enumerate(per.items()):
            color = f"C{i}"
            if d["ok"]:
                ax.scatter([x for x, _ in d["ok"]], [v for _, v in d["ok"]], color=color, label=lab, s=22)
            if d["infeasible"]:
                ax.scatter(d["infeasible"], [floor] * len(d["infeasible"]), color=color, marker="x", s=40,
                           label=f"{lab}: diverged")
        if kind == "log":
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{result['decides_on']} {result['metric']}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{result['study']}: trials against each nuisance parameter", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def isolation_plot(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = isolation_data(result)
    labs = list(data)
    fig, ax = plt.subplots(figsize=(1.8 + 1.4 * len(labs), 3.8))
    x = np.arange(len(labs))
    means = [data[lab]["confirm_mean"] for lab in labs]
    err = np.array([[m - (data[lab]["confirm_ci"][0] if data[lab]["confirm_ci"][0] is not None else m),
                     (data[lab]["confirm_ci"][1] if data[lab]["confirm_ci"][1] is not None else m) - m]
                    for lab, m in zip(labs, means)]).T
    ax.errorbar(x, means, yerr=err, fmt="o", color="C0", capsize=4, label=f"confirmation, test ({len(result['seeds'])} seeds, 95% CI)")
    if any(data[lab]["best_val"] is not None for lab in labs):
        ax.scatter(x + 0.1, [data[lab]["best_val"] for lab in labs], marker="s", color="C1", label=f"best trial, {result['decides_on']}")
    ax.set_xticks(x, labs)
    ax.set_xlabel(result["scientific"])
    ax.set_ylabel(result["metric"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------- text

def markdown(result: dict) -> str:
    name = result["study"]
    lines = [f"# Study: {name}", "", f"**Question.** {result['question']}", "", f"**Conclusion.** {result['conclusion']}", ""]
    if result["decides_on"] != "val":
        lines += ["**This study decides on the test split: its family has no validation split, so the choice of "
                  "setting has seen the numbers it is judged on.**", ""]
    lines += [f"Scientific parameter `{result['scientific']}`: {', '.join(result['values'])}. ",
              f"Command: `uv run reprozoo study {name}` (trials, selection, confirmation, this report).", ""]
    if result["trials"]:
        n_bad = sum(t["status"] == "infeasible" for t in result["trials"])
        lines += ["## Trials", "",
                  f"{result['trials_per_value']} {result['sampler']} trials per value over "
                  + ", ".join(f"`{k}` {next(iter(v))} {next(iter(v.values()))}" for k, v in result["nuisance"].items())
                  + (f", then {result['exploit']['trials']} per value from Optuna's TPE given those results"
                     if result.get("exploit") else "")
                  + f", one seed each, chosen on `{result['decides_on']}`; {n_bad} diverged (NaN guard, infeasible).", "",
                  f"![axis plots]({name}_axis.png)", ""]
        for w in result["edge_warnings"]:
            lines.append(f"- **Edge:** {w}")
        if result["edge_warnings"]:
            lines.append("")
        keys = list(result["nuisance"])
        lines += ["| value | best trial | " + " | ".join(keys) + f" | {result['decides_on']} {result['metric']} |",
                  "|---|---|" + "---:|" * (len(keys) + 1)]
        for lab in result["values"]:
            t = next(t for t in result["trials"] if t["trial"] == result["best"][lab])
            lines.append(f"| {lab} | {t['trial']} | " + " | ".join(f"{t['point'][k]:g}" if isinstance(t['point'][k], float)
                                                                   else str(t['point'][k]) for k in keys) + f" | {t['value']:.2f} |")
        lines.append("")
    lines += ["## Confirmation", "", f"![isolation plot]({name}_isolation.png)", "",
              f"Each value's {'best trial' if result['trials'] else 'recipe'} trained with seeds {result['seeds']} and scored on "
              "the test split; differences paired by seed (the ablation engine's statistics: paired t CI, BCa bootstrap CI, "
              "Holm-corrected p, `adopt?`).", "",
              "| value | run | mean | std | 95% CI | " + ("difference vs " + result["values"][0]) + " | bootstrap CI | p (Holm) | P(better) | adopt? |",
              "|---|---|---:|---:|---|---:|---|---:|---:|---|"]
    comp = {c["value"]: c for c in result["comparisons"]}
    for lab, c in result["confirmation"].items():
        row = f"| {lab} | {c['run']} | {_s(c['mean'], '.2f')} | {_s(c['std'], '.2f')} | [{_s(c['ci_low'], '.2f')}, {_s(c['ci_high'], '.2f')}] |"
        if lab in comp:
            d = comp[lab]
            row += (f" {_s(d['difference'])} [{_s(d['ci_low'])}, {_s(d['ci_high'])}] | [{_s(d['boot_low'])}, {_s(d['boot_high'])}] |"
                    f" {_s(d['p_holm'], '.3f')} | {_s(d['prob_improvement'], '.2f')} | {d['adopt']} |")
        else:
            row += " reference | | | | |"
        lines.append(row)
    lines.append("")
    pub = result.get("published")
    if pub:
        lines += [f"Published ({pub['baseline']}, `{pub['recipe']}`, {pub['split']}): {pub['value']:.2f}. "
                  + "; ".join(f"{lab} − published: {c['mean'] - pub['value']:+.2f}" for lab, c in result["confirmation"].items()), ""]
    lines += ["## Curves of the confirmation runs", "",
              "From each run's DVCLive curves (accuracy on the confirmation split every eval interval, gradient norm "
              "every step): still improving over the last 20% of training, an eval peak before 80% of training, "
              "a tail std above 1 point, gradient-norm spikes above 10x the median, and the norm's 90th percentile.", "",
              "| value | seed | final | diagnosis |", "|---|---:|---:|---|"]
    for lab, c in result["confirmation"].items():
        for seed, d in c["diagnosis"].items():
            lines.append(f"| {lab} | {seed} | {d.get('final', float('nan')):.2f} | {_diagnosis_text(d)} |")
    lines.append("")
    return "\n".join(lines)


def csv_text(result: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = list(result["nuisance"])
    w.writerow(["kind", "value", "trial", "seed", *keys, "split", result["metric"], "status"])
    for t in result["trials"]:
        w.writerow(["trial", t["label"], t["trial"], "", *(t["point"][k] for k in keys), result["decides_on"], t["value"], t["status"]])
    for lab, c in result["confirmation"].items():
        for seed, v in zip(result["seeds"], c["values"]):
            w.writerow(["confirmation", lab, c["run"], seed, *([""] * len(keys)), "test", v, "ok"])
    return buf.getvalue()


def report(name: str) -> list:
    study = load_study(name)
    result = analyze(study)
    out = reports_dir()
    files = [write_json(out / f"{name}.json", result), atomic_write_text(out / f"{name}.md", markdown(result)),
             atomic_write_text(out / f"{name}.csv", csv_text(result)),
             atomic_write_bytes(out / f"{name}_isolation.png", isolation_plot(result))]
    axis = axis_plot(result)
    if axis is not None:
        files.append(atomic_write_bytes(out / f"{name}_axis.png", axis))
    return files


def relpath(p) -> str:
    import os

    return os.path.relpath(p, paths.project_root())
