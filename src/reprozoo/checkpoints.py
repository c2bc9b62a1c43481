"""Published-checkpoint checks: evaluate a released checkpoint through a recipe's own test pipeline and
compare its accuracy with the published number, with the sampling uncertainty of the evaluated set.

`k` of `n` test images right gives an exact (Clopper-Pearson) 95% interval for the accuracy
(scipy.stats.binomtest). The verdict applies the rule of `stats.verdict` to that interval minus
the published value: `below`/`above` when it lies entirely beyond ±tolerance, `reproduced` when it
lies within ±(tolerance + margin), `inconclusive` otherwise. A subset of the test set gives a wide
interval: that is the honest answer, not a failure.
"""
from __future__ import annotations

from pathlib import Path

from . import paths
from .io import atomic_write_text, write_json


def binomial_verdict(correct: int, total: int, published: float, *, tolerance: float, margin: float) -> dict:
    from scipy.stats import binomtest

    ci = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="exact")
    acc, lo, hi = 100.0 * correct / total, 100.0 * ci.low, 100.0 * ci.high
    d_lo, d_hi = lo - published, hi - published
    if d_lo > tolerance:
        verdict = "above"
    elif d_hi < -tolerance:
        verdict = "below"
    elif d_lo >= -(tolerance + margin) and d_hi <= tolerance + margin:
        verdict = "reproduced"
    else:
        verdict = "inconclusive"
    return {"accuracy": acc, "ci_low": lo, "ci_high": hi, "published": published, "difference": acc - published,
            "interval_low": d_lo, "interval_high": d_hi, "tolerance": tolerance, "margin": margin, "verdict": verdict,
            "published_inside_ci": lo <= published <= hi}


def check_checkpoint(recipe, checkpoint: Path, *, published: float, source: str, tolerance: float = 0.005,
                     margin: float = 1.0, name: str | None = None) -> dict:
    """Evaluate `checkpoint` with `recipe`; write reports/checks/<name>.json and .md."""
    import hashlib
    import shlex
    import sys

    from .families import get_family

    counts = get_family(recipe.family).evaluate(recipe, checkpoint)
    from datetime import datetime, timezone

    result = {"recipe": recipe.name, "checkpoint": Path(checkpoint).name,
              "evaluated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "checkpoint_md5": hashlib.md5(Path(checkpoint).read_bytes()).hexdigest(), "source": source,
              "command": shlex.join(["reprozoo", *sys.argv[1:]]) if sys.argv[0].endswith("reprozoo") else None,
              **counts, **binomial_verdict(counts["correct"], counts["total"], published, tolerance=tolerance, margin=margin)}
    name = name or f"{recipe.name}--{Path(checkpoint).stem}"
    out = paths.reports_dir() / "checks"
    write_json(out / f"{name}.json", result)
    atomic_write_text(out / f"{name}.md", markdown(result))
    from .reports import write_index

    write_index()
    return result


def markdown(r: dict) -> str:
    err = lambda x: 100.0 - x  # noqa: E731
    return "\n".join([
        f"# Published checkpoint `{r['checkpoint']}` through recipe `{r['recipe']}`", "",
        f"Command: `{r['command'] or 'reprozoo eval ' + r['recipe'] + ' --checkpoint ' + r['checkpoint']}`; "
        f"checkpoint md5 `{r['checkpoint_md5']}`. Published: {r['source']}.", "",
        "| evaluated images | correct | top-1 (error) | exact 95% CI of top-1 | published top-1 (error) "
        "| ours − published [95% interval] | verdict |",
        "|---:|---:|---:|---:|---:|---:|---|",
        f"| {r['total']} ({r['split']} split) | {r['correct']} | {r['accuracy']:.2f} ({err(r['accuracy']):.2f}) | "
        f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {r['published']:.2f} ({err(r['published']):.2f}) | "
        f"{r['difference']:+.2f} [{r['interval_low']:+.2f}, {r['interval_high']:+.2f}] | **{r['verdict']}** |", "",
        f"The published value lies {'inside' if r['published_inside_ci'] else 'outside'} the 95% interval of our top-1.", "",
        f"The interval is the exact binomial (Clopper-Pearson) interval of {r['correct']}/{r['total']}, so it carries "
        f"the sampling uncertainty of evaluating {r['total']} images. `reproduced`: the whole interval lies within "
        f"±(tolerance {r['tolerance']:g} + margin {r['margin']:g}) points of the published value; `below`/`above`: "
        "entirely beyond ±tolerance; otherwise `inconclusive`.", ""])
