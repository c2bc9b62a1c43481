"""`reprozoo site`: every claim, verdict, ablation, settle run and check on one static site under
`reports/site/`, built from the JSON reports (and the run curves where the runs are on this machine).

The site opens from disk on an offline machine: no CDN, no server, no script library. Charts are SVG
written here, each point and line with a `<title>`, so hovering shows the seed and value without any
JavaScript; the overview's filters are a few lines of plain JavaScript in the page.
"""
from __future__ import annotations

import csv
import html
import json
import math
import re
from pathlib import Path

from . import paths
from .io import atomic_write_text, read_json

BADGE = {"reproduced": "#1a7f37", "below": "#cf222e", "above": "#0969da", "inconclusive": "#9a6700",
         "not comparable": "#57606a", "not run": "#8c959f", "yes": "#1a7f37", "no": "#cf222e", "unclear": "#9a6700"}
CURVES = ("loss", "accuracy", "lr", "grad_norm")  # the DVCLive files drawn on a run page, when present
MAX_POINTS = 300  # points per curve: enough for the shape, small enough for a page that paints at once

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1500px;padding:1em 2em;color:#1f2328}
a{color:#0969da}table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border-bottom:1px solid #d0d7de;
padding:4px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{color:#fff;border-radius:10px;padding:1px 8px;white-space:nowrap;font-size:12px}.fragile{font-weight:bold;color:#cf222e}
nav{margin-bottom:1em}nav a{margin-right:1em}code{background:#f6f8fa;padding:1px 4px;border-radius:4px}
details{font-size:12px;color:#57606a}svg text{font:11px system-ui,sans-serif}.filters select{margin-right:1em}
img{max-width:100%;border:1px solid #d0d7de}#claims td:last-child{max-width:22em;font-size:12px}
#claims td:nth-child(2){overflow-wrap:anywhere;min-width:14em}"""

FILTER_JS = """<script>
function applyFilters(){const f={};document.querySelectorAll('.filters select').forEach(s=>{if(s.value)f[s.name]=s.value});
let shown=0;document.querySelectorAll('#claims tbody tr').forEach(r=>{const ok=Object.entries(f).every(([k,v])=>r.dataset[k]===v);
r.style.display=ok?'':'none';if(ok)shown++});document.getElementById('shown').textContent=shown}
document.querySelectorAll('.filters select').forEach(s=>s.addEventListener('change',applyFilters));applyFilters();
</script>"""


def e(x) -> str:
    return html.escape(str(x), quote=True)


def _page(title: str, body: str, depth: int) -> str:
    up = "../" * depth
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)} · reprozoo</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>"
            f"<nav><a href='{up}index.html'>All claims</a><a href='{up}ablations.html'>Ablations</a>"
            f"<a href='{up}checks.html'>Checks</a></nav><h1>{e(title)}</h1>{body}</body></html>\n")


def badge(verdict: str, stability: float | None = None) -> str:
    st = "" if stability is None else f" <span class='{'fragile' if stability < 0.9 else ''}'>stable {100 * stability:.0f}%</span>"
    return f"<span class=badge style='background:{BADGE.get(verdict, '#57606a')}'>{e(verdict)}</span>{st}"


def _source_html(src) -> str:
    if not isinstance(src, dict):
        return e(src or "")
    parts = []
    if "paper" in src:
        text = e(src["paper"] + (f", {src['table']}" if "table" in src else ""))
        m = re.search(r"arXiv:(\d{4}\.\d{4,5})", src["paper"])
        parts.append(f"<a href='https://arxiv.org/abs/{m.group(1)}'>{text}</a>" if m else text)
    if "repo" in src:
        url = f"https://github.com/{src['repo']}/blob/{src['commit']}/{src['path']}"
        parts.append(f"<a href='{e(url)}'>{e(src['repo'])}/{e(src['path'])}@{e(src['commit'][:10])}</a>")
    if "url" in src:
        parts.append(f"<a href='{e(src['url'])}'>{e(src['url'])}</a>")
    return "; ".join(parts)


# --- SVG charts -------------------------------------------------------------------------------------------

def _scale(lo, hi, a, b):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def strip_plot(values: list[float], seeds: list[int], published: float | None, ci: tuple | None, label: str) -> str:
    """Each seed a dot on the metric axis, the published value a red line, our 95% interval a grey band."""
    pts = list(values) + ([published] if published is not None else []) + (list(ci) if ci else [])
    lo, hi = min(pts), max(pts)
    pad = (hi - lo) * 0.08 or 0.5
    w, h = 560, 70
    x = _scale(lo - pad, hi + pad, 20, w - 20)
    out = [f"<svg role=img aria-label='{e(label)}' width={w} height={h} viewBox='0 0 {w} {h}'>"]
    if ci:
        out.append(f"<rect x={x(ci[0]):.1f} y=12 width={max(1, x(ci[1]) - x(ci[0])):.1f} height=30 fill='#d0d7de'>"
                   f"<title>our mean's 95% interval [{ci[0]:.2f}, {ci[1]:.2f}]</title></rect>")
    if published is not None:
        out.append(f"<line x1={x(published):.1f} x2={x(published):.1f} y1=6 y2=48 stroke='#cf222e' stroke-width=2>"
                   f"<title>published {published:g}</title></line>")
    for i, (v, s) in enumerate(zip(values, seeds)):
        out.append(f"<circle class=seed cx={x(v):.1f} cy={20 + (i % 3) * 7} r=4 fill='#0969da' fill-opacity=.75>"
                   f"<title>seed {s}: {v:g}</title></circle>")
    for t in _ticks(lo - pad, hi + pad):
        out.append(f"<text x={x(t):.1f} y={h - 6} text-anchor=middle>{t:g}</text>")
    out.append("</svg>")
    return "".join(out)


def _ticks(lo, hi, n=6):
    step = 10 ** math.floor(math.log10((hi - lo) / n or 1))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-9:
        out.append(round(t, 10))
        t += step
    return out


def forest_plot(rows: list[dict]) -> str:
    """Effect of each trick with its 95% interval; zero dashed; colour by the adopt decision."""
    if not rows:
        return ""
    lo = min(min(r["ci_low"] for r in rows), 0)
    hi = max(max(r["ci_high"] for r in rows), 0)
    pad = (hi - lo) * 0.08 or 0.5
    w, row_h, left = 640, 24, 190
    h = row_h * len(rows) + 28
    x = _scale(lo - pad, hi + pad, left, w - 20)
    out = [f"<svg role=img aria-label='forest plot' width={w} height={h} viewBox='0 0 {w} {h}'>",
           f"<line x1={x(0):.1f} x2={x(0):.1f} y1=0 y2={h - 20} stroke='#57606a' stroke-dasharray='3 3' />"]
    for i, r in enumerate(rows):
        y = 14 + i * row_h
        c = BADGE.get(r["adopt"], "#57606a")
        tip = f"{r['label']}: {r['difference']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}], adopt {r['adopt']}"
        out.append(f"<text x={left - 8} y={y + 4} text-anchor=end>{e(r['label'])}</text>"
                   f"<g class=effect><title>{e(tip)}</title><line x1={x(r['ci_low']):.1f} x2={x(r['ci_high']):.1f} y1={y} y2={y} "
                   f"stroke='{c}' stroke-width=2 /><circle cx={x(r['difference']):.1f} cy={y} r=4 fill='{c}' /></g>")
    for t in _ticks(lo - pad, hi + pad):
        out.append(f"<text x={x(t):.1f} y={h - 6} text-anchor=middle>{t:g}</text>")
    out.append("</svg>")
    return "".join(out)


def curve_plot(series: dict[int, list[tuple[float, float]]], name: str) -> str:
    """One polyline per seed (hover: the seed); at most MAX_POINTS points each."""
    series = {s: pts for s, pts in series.items() if pts}
    if not series:
        return ""
    xs = [p[0] for pts in series.values() for p in pts]
    ys = [p[1] for pts in series.values() for p in pts if math.isfinite(p[1])]
    if not ys:
        return ""
    w, h = 560, 220
    log = min(ys) > 0 and max(ys) / min(ys) > 100  # losses and gradient norms span decades
    f = math.log10 if log else (lambda v: v)
    x = _scale(min(xs), max(xs), 50, w - 10)
    y0 = _scale(f(min(ys)), f(max(ys)), h - 25, 10)
    y = lambda v: y0(f(v)) if not log or v > 0 else h - 25  # noqa: E731
    out = [f"<svg role=img aria-label='{e(name)} curve' width={w} height={h} viewBox='0 0 {w} {h}'>"]
    for i, (seed, pts) in enumerate(sorted(series.items())):
        step = max(1, math.ceil(len(pts) / MAX_POINTS))
        pts = [p for p in pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else []) if math.isfinite(p[1])]  # keep the end
        d = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)
        colour = f"hsl({(i * 47) % 360},60%,45%)"
        out.append(f"<polyline class=seed points='{d}' fill=none stroke='{colour}' stroke-width=1.2>"
                   f"<title>seed {seed}: last {pts[-1][1]:.4g} at step {pts[-1][0]:g}</title></polyline>")
    out.append(f"<text x=4 y=14>{max(ys):.3g}{' (log)' if log else ''}</text><text x=4 y={h - 25}>{min(ys):.3g}</text>"
               f"<text x={w - 10} y={h - 6} text-anchor=end>step {max(xs):g}</text><text x=50 y={h - 6}>{min(xs):g}</text></svg>")
    return "".join(out)


def _read_tsv(path: Path) -> list[tuple[float, float]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if len(rows) < 2 or "step" not in rows[0]:
        return []
    k, i = rows[0].index("step"), rows[0].index(path.stem) if path.stem in rows[0] else len(rows[0]) - 1
    out = []
    for r in rows[1:]:
        try:
            out.append((float(r[k]), float(r[i])))
        except (ValueError, IndexError):
            continue  # a torn last line of an interrupted run
    return out


# --- gathering ---------------------------------------------------------------------------------------------

def _recipe_info(name: str) -> dict:
    """Family, dataset and deviations of a recipe, read without importing any framework."""
    from .errors import ReprozooError
    from .recipes import read_raw

    try:
        raw = read_raw(name)
    except ReprozooError:
        return {"family": "?", "dataset": "?", "deviations": []}
    d = raw.get("dataset")
    dataset = d.get("name") if isinstance(d, dict) else d if isinstance(d, str) else None
    if dataset is None and isinstance(raw.get("task"), str):
        dataset = raw["task"]
    if dataset is None and isinstance(raw.get("config"), str):  # zoo config names carry the dataset last
        dataset = Path(raw["config"]).stem.split("_")[-1]
    return {"family": raw.get("family", "?"), "dataset": dataset or "?", "deviations": list(raw.get("deviations") or [])}


def gather() -> dict:
    """Everything the site shows, from the reports on disk."""
    from .claims import list_baselines, load_baseline
    from .pipeline import load_params, pipeline_file

    rep = paths.reports_dir()
    params = load_params()
    baselines = []
    for name in list_baselines():
        b = load_baseline(name)
        j = rep / f"{name}.json"
        result = read_json(j) if j.exists() else None
        run_cmd = (f"uv run reprozoo repro {name}" if name in params else f"reprozoo pipeline {name} (add a params.yaml section first)")
        if name in params and pipeline_file(name).name == "dvc.yaml" and pipeline_file(name).parent == paths.project_root():
            run_cmd = "uv run dvc repro"
        rows = []
        for c in b.claims:
            r = (result or {}).get("claims", {}).get(c.label)
            info = _recipe_info(c.recipe)
            rows.append({"baseline": name, "label": c.label, "recipe": c.recipe, "metric": c.metric, "split": c.split,
                         "published": c.value, "source": c.source, "result": r, **info,
                         "verdict": r["verdict"] if r and r.get("summary") else "not run"})
        baselines.append({"name": name, "title": b.title, "description": b.description, "result": result,
                          "claims": rows, "run_cmd": run_cmd})
    ablations = [read_json(p) for p in sorted((rep / "ablations").glob("*.json"))]
    studies = [read_json(p) for p in sorted((rep / "studies").glob("*.json")) if not p.stem.endswith(("_trials", "_exploit"))]
    checks = [read_json(p) | {"_file": p.stem} for p in sorted((rep / "checks").glob("*.json"))]
    settles = [read_json(p) | {"_file": p.stem} for p in sorted((rep / "settle").glob("*.json"))]
    sanity = sorted(p.stem for p in (rep / "checks").glob("*.md") if not p.stem.endswith("-curve") and "--" not in p.stem)
    return {"baselines": baselines, "ablations": ablations, "checks": checks, "settles": settles, "sanity": sanity,
            "studies": studies}


# --- pages -------------------------------------------------------------------------------------------------

def _ours(r: dict | None) -> str:
    s = (r or {}).get("summary")
    return f"{s['mean']:.2f} ± {s['std'] or 0:.2f} (n={s['n']})" if s else "–"


def _interval(r: dict | None) -> str:
    if not r or r.get("low") is None:
        return "–"
    return f"{r['difference']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]"


def overview(data: dict) -> str:
    rows = [c for b in data["baselines"] for c in b["claims"]]
    opts = {k: sorted({str(c[k]) for c in rows}) for k in ("family", "verdict", "dataset")}
    filters = "".join(f"<label>{k} <select name={k}><option value=''>all</option>"
                      + "".join(f"<option>{e(v)}</option>" for v in vals) + "</select></label>" for k, vals in opts.items())
    counts = {v: sum(c["verdict"] == v for c in rows) for v in opts["verdict"]}
    summary = ", ".join(f"{badge(v)} {n}" for v, n in counts.items())
    body = [f"<p>{len(rows)} published numbers in {len(data['baselines'])} claims files: {summary}. Each verdict compares "
            "the 95% interval of (ours − published) over seeds with the claim's tolerance and margin "
            "(docs/statistics.md); “stable N%” is the share of simulated replications of the seeds that give the "
            "same verdict (fragile under 90%).</p>",
            f"<p class=filters>{filters} <span id=shown>{len(rows)}</span> shown</p>",
            "<table id=claims><thead><tr><th>claims file</th><th>claim</th><th>family</th><th>dataset</th><th>published</th>"
            "<th>ours (mean ± std, n)</th><th>ours − published [95%]</th><th>verdict</th><th>deviations</th><th>source</th></tr></thead><tbody>"]
    ran_first = sorted(data["baselines"], key=lambda b: b["result"] is None)  # stable: claims-file order within each
    for b in ran_first:
        for c in b["claims"]:
            r = c["result"]
            verdict = badge(c["verdict"], r.get("stability") if r else None) if c["verdict"] != "not run" else \
                badge("not run") + f"<details><summary>command</summary><code>{e(b['run_cmd'])}</code></details>"
            devs = (f"<details><summary>{len(c['deviations'])}</summary><ul>" + "".join(f"<li>{e(d)}</li>" for d in c["deviations"])
                    + "</ul></details>") if c["deviations"] else "none listed"
            body.append(f"<tr data-family='{e(c['family'])}' data-verdict='{e(c['verdict'])}' data-dataset='{e(c['dataset'])}'>"
                        f"<td><a href='baselines/{e(b['name'])}.html'>{e(b['name'])}</a></td><td>{e(c['label'])}</td>"
                        f"<td>{e(c['family'])}</td><td>{e(c['dataset'])}</td><td class=n>{c['published']:g}</td>"
                        f"<td class=n>{_ours(r)}</td><td class=n>{_interval(r)}</td><td>{verdict}</td><td>{devs}</td>"
                        f"<td>{_source_html(c['source'])}</td></tr>")
    body.append("</tbody></table>")
    spreads = [b for b in data["baselines"] if not b["claims"]]
    if spreads:
        body.append("<h2>Seed spreads (no published number)</h2><ul>" + "".join(
            f"<li><a href='baselines/{e(b['name'])}.html'>{e(b['title'])}</a>" + ("" if b["result"] else f": not run (<code>{e(b['run_cmd'])}</code>)")
            + "</li>" for b in spreads) + "</ul>")
    if data["settles"]:
        body.append("<h2>Settle runs</h2><ul>" + "".join(
            f"<li><a href='../settle/{e(s['_file'])}.md'>settling {e(s['target'])}</a>: seeds {len(s['seeds_start'])} → "
            f"{len(s['seeds_end'])}; {e(s['stopped_because'])}</li>" for s in data["settles"]) + "</ul>")
    return _page("Published numbers and our verdicts", "".join(body) + FILTER_JS, 0)


def baseline_page(b: dict, run_pages: set[str]) -> str:
    res = b["result"]
    body = [f"<p>{e(b['description'])}</p>"]
    if res is None:
        body.append(f"<p>No runs yet. <code>{e(b['run_cmd'])}</code> trains and compares them.</p>")
    for c in b["claims"]:
        r = c["result"]
        link = f" · <a href='../runs/{e(c['recipe'])}.html'>curves</a>" if c["recipe"] in run_pages else ""
        body.append(f"<h2>{e(c['label'])} {badge(c['verdict'], r.get('stability') if r else None)}</h2>"
                    f"<p>published {c['published']:g} ({_source_html(c['source'])}); ours {_ours(r)}; "
                    f"ours − published {_interval(r)}{link}</p>")
        if r and r.get("values"):
            s = r["summary"]
            body.append(strip_plot(r["values"], r["seeds"], c["published"], (s["ci_low"], s["ci_high"]) if s.get("ci_low") is not None else None, c["label"]))
            body.append("<table><tr><th>seed</th>" + "".join(f"<th>{x}</th>" for x in r["seeds"]) + "</tr><tr><td>"
                        + e(c["metric"]) + "</td>" + "".join(f"<td class=n>{v:g}</td>" for v in r["values"]) + "</tr></table>")
            if r.get("reason"):
                body.append(f"<p>Why: {e(r['reason'])}" + (f"; about {r['seeds_needed']} seeds would settle it" if r.get("seeds_needed") else "") + "</p>")
        if c["deviations"]:
            body.append("<p>Deviations from the published setup:</p><ul>" + "".join(f"<li>{e(d)}</li>" for d in c["deviations"]) + "</ul>")
    if res and res.get("spread") and not b["claims"]:
        for recipe, metrics in res["spread"].items():
            for key, s in metrics.items():
                body.append(f"<h2>{e(recipe)} {e(key)}</h2>" + strip_plot(s["values"], s["seeds"], None, None, f"{recipe} {key}"))
    if res and res.get("environment"):
        env = res["environment"]
        body.append("<h2>Environment</h2><table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v if not isinstance(v, list) else ', '.join(map(str, v)))}</td></tr>"
                                                           for k, v in env.items() if k != "commands") + "</table>")
    body.append(f"<p><a href='../../{e(b['name'])}.md'>Markdown report</a> · <a href='../../{e(b['name'])}.json'>JSON</a></p>"
                if res else "")
    return _page(b["title"], "".join(body), 1)


def _run_link(recipe: str, run_pages: set[str], text: str) -> str:
    return f"<a href='../runs/{e(recipe)}.html'>{text}</a>" if recipe in run_pages else text


def ablation_page(a: dict, run_pages: set[str]) -> str:
    body = [f"<p>{e(a['description'])}. Base recipe <code>{e(a['base'])}</code>, {a['runs']} runs, seeds "
            f"{', '.join(map(str, a['seeds']))}; metric {e(a['metric'])} on {e(a['split'])}.</p>"]
    for mode, rows in a["modes"].items():
        labelled = [dict(r, label=r["trick"]) for r in rows]
        body.append(f"<h2>{e(mode)}</h2>" + forest_plot(labelled))
        table = ["<table><tr><th>trick</th><th>with</th><th>without</th><th>effect [95% CI]</th><th>p (Holm)</th><th>adopt?</th></tr>"]
        for r in rows:
            with_, without = f"{r['mean']:.2f}", f"{r['reference_mean']:.2f}"
            table.append(f"<tr><td>{e(r['trick'])}</td><td class=n>{_run_link(r['with'], run_pages, with_)}</td>"
                         f"<td class=n>{_run_link(r['without'], run_pages, without)}</td>"
                         f"<td class=n>{r['difference']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]</td>"
                         f"<td class=n>{r['p_holm']:.3f}</td><td>{badge(r['adopt'], r.get('stability'))}</td></tr>")
        body.append("".join(table) + "</table>")
    body.append(f"<p><a href='../../ablations/{e(a['ablation'])}.md'>Markdown report</a> · "
                f"<img alt='forest plot (matplotlib)' src='../../ablations/{e(a['ablation'])}.png'></p>")
    return _page(f"Ablation {a['ablation']}", "".join(body), 1)


def ablations_index(data: dict) -> str:
    rows = []
    for a in data["ablations"]:
        adopted = sorted({r["trick"] for rs in a["modes"].values() for r in rs if r["adopt"] == "yes"})
        rows.append(f"<tr><td><a href='ablations/{e(a['ablation'])}.html'>{e(a['ablation'])}</a></td><td>{e(a['description'])}</td>"
                    f"<td>{e(', '.join(a['modes']))}</td><td>{e(', '.join(adopted) or 'none')}</td></tr>")
    body = "<table><tr><th>ablation</th><th>question</th><th>modes</th><th>adopt</th></tr>" + "".join(rows) + "</table>"
    if data.get("studies"):  # tuned comparisons (`reprozoo study`, `reprozoo versus`): the conclusion and the report
        body += ("<h2>Studies</h2><table><tr><th>study</th><th>question</th><th>conclusion</th></tr>" + "".join(
            f"<tr><td><a href='../studies/{e(st['study'])}.md'>{e(st['study'])}</a></td><td>{e(st['question'])}</td>"
            f"<td>{e(st['conclusion'])}</td></tr>" for st in data["studies"]) + "</table>")
    return _page("Ablations", body, 0)


def checks_page(data: dict) -> str:
    body = ["<h2>Published checkpoints</h2><table><tr><th>checkpoint</th><th>recipe</th><th>ours [95%]</th><th>published</th><th>verdict</th></tr>"]
    for c in data["checks"]:
        if "checkpoint" not in c:
            continue
        value = c.get("accuracy", c.get("value"))
        body.append(f"<tr><td><a href='../checks/{e(c['_file'])}.md'>{e(c['checkpoint'])}</a></td><td>{e(c['recipe'])}</td>"
                    f"<td class=n>{value:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}] on {c['total']} images</td>"
                    f"<td class=n>{c['published']:.2f}</td><td>{badge(c['verdict'])}</td></tr>")
    body.append("</table><h2>Sanity checks</h2>")
    rep = paths.reports_dir() / "checks"
    for name in data["sanity"]:
        body.append(f"<h3><a href='../checks/{e(name)}.md'>{e(name)}</a></h3>")
        for png in sorted(rep.glob(f"{name}-*.png")):
            body.append(f"<img alt='{e(png.stem)}' src='../checks/{e(png.name)}' loading=lazy>")
    return _page("Checks", "".join(body), 0)


def run_page(recipe: str, seeds: dict[int, Path]) -> str:
    body = [f"<p>Training curves of <code>{e(recipe)}</code> from each run's DVCLive files "
            f"(<code>runs/{e(recipe)}/seed*/dvclive/plots/metrics/</code>), at most {MAX_POINTS} points per seed; hover a line for its seed.</p>"]
    for name in CURVES:
        series = {s: _read_tsv(d / "dvclive/plots/metrics" / f"{name}.tsv") for s, d in seeds.items()
                  if (d / "dvclive/plots/metrics" / f"{name}.tsv").exists()}
        if series:
            body.append(f"<h2>{e(name)}</h2>" + curve_plot(series, name))
    return _page(f"Runs of {recipe}", "".join(body), 1)


def build(out: Path | None = None) -> list[Path]:
    """Write the site; return the files written."""
    out = out or paths.reports_dir() / "site"
    data = gather()
    runs_root = paths.runs_dir()
    recipes = sorted({c["recipe"] for b in data["baselines"] for c in b["claims"]}
                     | {arm for a in data["ablations"] for arm in a["arms"]}
                     | {r for b in data["baselines"] for r in ((b["result"] or {}).get("spread") or {})})
    run_seeds = {}
    for r in recipes:
        seeds = {int(d.name[4:]): d for d in sorted((runs_root / r).glob("seed*")) if d.name[4:].isdigit() and (d / "dvclive").is_dir()}
        if seeds:
            run_seeds[r] = seeds
    pages = {out / "index.html": overview(data), out / "ablations.html": ablations_index(data), out / "checks.html": checks_page(data)}
    for b in data["baselines"]:
        pages[out / "baselines" / f"{b['name']}.html"] = baseline_page(b, set(run_seeds))
    for a in data["ablations"]:
        pages[out / "ablations" / f"{a['ablation']}.html"] = ablation_page(a, set(run_seeds))
    for r, seeds in run_seeds.items():
        pages[out / "runs" / f"{r}.html"] = run_page(r, seeds)
    stale = {p for p in out.rglob("*.html")} - set(pages) if out.exists() else set()
    for p in stale:  # pages of reports that no longer exist
        p.unlink()
    for p, text in pages.items():
        atomic_write_text(p, text)
    atomic_write_text(out / "site.json", json.dumps({"claims": [
        {k: c[k] for k in ("baseline", "label", "verdict", "family", "dataset")} for b in data["baselines"] for c in b["claims"]]},
        indent=1, sort_keys=True) + "\n")
    return sorted(pages) + [out / "site.json"]
