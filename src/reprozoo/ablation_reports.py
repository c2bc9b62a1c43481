"""Ablation report writers: `reports/ablations/<name>.md`, `.csv`, `.tex` (booktabs) and a forest plot `.png`."""
from __future__ import annotations

import io

from . import paths
from .io import atomic_write_bytes, atomic_write_text, read_json
from .reports import _csv, _fmt, stable_note, write_index

COLUMNS = ["mode", "trick", "with", "without", "mean", "reference_mean", "difference", "ci_low", "ci_high", "boot_low",
           "boot_high", "prob_improvement", "p_value", "p_holm", "reference_std", "adopt", "stability", "published_delta", "published_source"]
ROW_LABEL = {"cumulative": "+ {}", "leave-one-out": "− {}", "one-at-a-time": "{} alone"}
READING = {
    "cumulative": "each row adds one trick to the row above; effect = this row − the row above",
    "leave-one-out": "each row removes one trick from the full stack; effect = full stack − the stack without it",
    "one-at-a-time": "each row is the base recipe plus one trick; effect = that arm − the base recipe",
}


def _rows(result: dict) -> list[dict]:
    return [{"mode": m, **r} for m, rows in result["modes"].items() for r in rows]


def _signed(x, nd=2):
    return "–" if x is None else f"{x:+.{nd}f}"


def _arm_summary(result: dict, arm: str) -> str:
    a = result["arms"][arm]
    return f"{_fmt(a['mean'])} ± {_fmt(a['std'])}"


def _repro_command(base: str) -> str:
    """The `dvc repro` of the pipeline that trains the ablation's base recipe (the default one if none does)."""
    from .pipeline import DEFAULT_BASELINE, training_baseline
    from .reports import repro_command

    return repro_command(training_baseline(base) or DEFAULT_BASELINE)


def markdown(result: dict, studies: dict[str, str] | None = None) -> str:
    """`studies`: trick name -> a study that tunes the base recipe with and without it (linked from its rows)."""
    name, metric = result["ablation"], f"{result['metric']} ({result['split']})"
    studies = studies or {}
    has_pub = any(r["published_delta"] is not None for r in _rows(result))
    lines = [f"# Ablation `{name}`: {result['description']}", "",
             f"Base recipe `{result['base']}`; tricks in order: {', '.join(f'`{t}`' for t in result['tricks'])}. "
             f"Metric: {metric}, {'higher' if result['higher_is_better'] else 'lower'} is better; "
             f"seeds {', '.join(map(str, result['seeds']))}, every arm run with each of them.", "",
             f"Produced by `{_repro_command(result['base'])}` (stage `ablate_{name}`) or `uv run reprozoo ablate {name}`; "
             f"raw numbers in [`{name}.json`]({name}.json) and [`{name}.csv`]({name}.csv), LaTeX in [`{name}.tex`]({name}.tex).", ""]
    for mode, rows in result["modes"].items():
        lines += [f"## {mode}", "", f"Reading: {READING[mode]}. Paired by seed.", "",
                  "| row | with: mean ± std | without: mean ± std | effect [95% CI, paired t] | bootstrap 95% CI "
                  "| P(improve) | p (Holm) | adopt? |" + (" published effect |" if has_pub else ""),
                  "|---|---:|---:|---:|---:|---:|---:|---|" + ("---:|" if has_pub else "")]
        for r in rows:
            pub = f" {_signed(r['published_delta'])} |" if has_pub else ""
            study = studies.get(r["trick"].split("(")[0].strip())
            link = f" ([tuned: study `{study}`](../studies/{study}.md))" if study else ""
            lines.append(f"| {ROW_LABEL[mode].format(r['trick'])}{link} | {_arm_summary(result, r['with'])} | "
                         f"{_arm_summary(result, r['without'])} | **{_signed(r['difference'])}** "
                         f"[{_signed(r['ci_low'])}, {_signed(r['ci_high'])}] | [{_signed(r['boot_low'])}, {_signed(r['boot_high'])}] | "
                         f"{r['prob_improvement']:.2f} | {r['p_holm']:.3f} | {r['adopt']}{stable_note(r.get('stability'))} |{pub}")
        lines.append("")
    lines += [f"![effects with 95% CIs]({name}.png)", "", "## Arms", "",
              "| arm (run directory under runs/) | mean ± std | " + " | ".join(f"seed {s}" for s in result["seeds"]) + " |",
              "|---|---:|" + "---:|" * len(result["seeds"])]
    for arm, a in result["arms"].items():
        lines.append(f"| `{arm}` | {_fmt(a['mean'])} ± {_fmt(a['std'])} | " + " | ".join(_fmt(v) for v in a["values"]) + " |")
    lines += ["", "## How to read it", "",
              "effect: mean over seeds of (with − without) on the same seed, signed so that positive is better. "
              "CI: paired t interval (scipy.stats.ttest_rel); bootstrap: BCa over the paired differences "
              "(scipy.stats.bootstrap). P(improve): share of seeds where the trick helped (ties count half). "
              "p (Holm): paired t test, Holm-corrected over the rows of the mode (statsmodels). adopt? `yes` when the "
              "corrected test is significant at 5% and the gain exceeds the seed-to-seed std of the arm without the "
              "trick (the tuning playbook's rule: adopt only what clearly beats the noise); `no` when it is "
              "significantly harmful; else `unclear`. `stable N%`: in N% of 2000 simulated replications of the seeds "
              "(the paired differences drawn again, normal with their mean and std, the whole rule applied, Holm "
              "included) the decision is the same; under 90% it is marked **fragile**. "
              "Full rules: docs/usage.md, section \"Ablations\".", ""]
    if has_pub:
        lines += ["## Published effects", ""]
        lines += [f"- {r['trick']}: {_signed(r['published_delta'])}, {r['published_source']}"
                  for r in result["modes"][next(iter(result["modes"]))] if r["published_delta"] is not None]
        lines.append("")
    lines += ["## Environment", "", f"- {result['runs']} runs; training wall time {result['train_wall_seconds_total']} s "
              f"summed over runs; latest run started {result['latest_run_utc']} UTC", ""]
    return "\n".join(lines)


def _tex_escape(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("#", r"\#")


def latex(result: dict) -> str:
    """One booktabs table per mode (needs \\usepackage{booktabs})."""
    name = result["ablation"]
    out = [f"% Generated by `reprozoo ablate {name}` from reports/ablations/{name}.json. Needs booktabs."]
    tex_label = {"cumulative": "$+$\\,{}", "leave-one-out": "$-$\\,{}", "one-at-a-time": "{} alone"}
    for mode, rows in result["modes"].items():
        out += ["\\begin{table}[t]", "\\centering", "\\small", "\\begin{tabular}{lrrrrl}", "\\toprule",
                f"Row & {_tex_escape(result['metric'])} & $\\Delta$ [95\\% CI] & $P(\\text{{improve}})$ & $p_\\text{{Holm}}$ & Adopt \\\\",
                "\\midrule"]
        first = rows[0]
        out.append(f"{_tex_escape(first['without'] if mode != 'leave-one-out' else 'full stack')} & "
                   f"{result['arms'][first['without' if mode != 'leave-one-out' else 'with']]['mean']:.2f} & & & & \\\\")
        for r in rows:
            shown = r["with"] if mode != "leave-one-out" else r["without"]
            out.append(f"{tex_label[mode].format(_tex_escape(r['trick']))} & {result['arms'][shown]['mean']:.2f} & "
                       f"${r['difference']:+.2f}$ [${r['ci_low']:+.2f}$, ${r['ci_high']:+.2f}$] & {r['prob_improvement']:.2f} & "
                       f"{r['p_holm']:.3f} & {r['adopt']} \\\\")
        out += ["\\bottomrule", "\\end{tabular}",
                f"\\caption{{{_tex_escape(result['description'])}: {mode}, {len(result['seeds'])} seeds, paired by seed. "
                f"$\\Delta$: effect of the trick (with $-$ without), paired-$t$ 95\\% CI; $p$ Holm-corrected over the rows.}}",
                f"\\label{{tab:{_tex_escape(name).replace(chr(92) + '_', '-')}-{mode}}}", "\\end{table}", ""]
    return "\n".join(out)


def forest_plot(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(result["modes"].items())
    n = max(len(rows) for _, rows in modes)
    fig, axes = plt.subplots(1, len(modes), figsize=(4.2 * len(modes), 0.45 * n + 1.4), squeeze=False, sharex=True)
    colors = {"yes": "tab:green", "no": "tab:red", "unclear": "tab:gray"}
    for ax, (mode, rows) in zip(axes[0], modes):
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows):
            ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=colors[r["adopt"]], lw=2)
            ax.plot([r["difference"]], [y], "o", color=colors[r["adopt"]])
            if r["published_delta"] is not None:
                ax.plot([r["published_delta"]], [y], "x", color="tab:blue", ms=7, label="published")
        ax.axvline(0, color="black", lw=0.8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_yticks(ys, [ROW_LABEL[mode].format(r["trick"]) for r in rows], fontsize=8)
        ax.set_title(mode, fontsize=9)
        ax.set_xlabel(f"effect on {result['metric']} (with − without), 95% CI", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{result['ablation']}: {len(result['seeds'])} seeds, paired; green = adopt, grey = unclear, red = harmful",
                 fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def ablation_report(name: str) -> list:
    from .studies import studies_of_tricks

    d = paths.reports_dir() / "ablations"
    result = read_json(d / f"{name}.json")
    written = [
        atomic_write_text(d / f"{name}.md", markdown(result, studies_of_tricks(result["base"]))),
        atomic_write_text(d / f"{name}.csv", _csv(_rows(result), COLUMNS)),
        atomic_write_text(d / f"{name}.tex", latex(result)),
        atomic_write_bytes(d / f"{name}.png", forest_plot(result)),
    ]
    return written + [write_index()]
