"""Published-checkpoint checks: evaluate a released checkpoint through a recipe's own test pipeline and
compare its accuracy with the published number, with the sampling uncertainty of the evaluated set.

`k` of `n` test images right gives an exact (Clopper-Pearson) 95% interval for the accuracy
(scipy.stats.binomtest). The verdict applies the rule of `stats.verdict` to that interval minus
the published value: `below`/`above` when it lies entirely beyond ±tolerance, `reproduced` when it
lies within ±(tolerance + margin), `inconclusive` otherwise. A subset of the test set gives a wide
interval: that is the honest answer, not a failure. A metric that is not a proportion (box AP)
gets a bootstrap interval over the evaluated images when they are a subset (the family computes
it), and no interval on the whole set the published number was computed on.
"""
from __future__ import annotations

import contextvars
import pickle
import tempfile
import zipfile
from pathlib import Path

from . import paths
from .errors import ConfigError
from .io import atomic_write_text, write_json

_TRUSTED: contextvars.ContextVar[frozenset] = contextvars.ContextVar("trusted_checkpoints", default=frozenset())


def load_weights(path, map_location="cpu"):
    """`torch.load` that never runs code from the file: `weights_only=True` (tensors and plain Python
    values only). A file that needs full unpickling is refused with one line naming the opt-in flag,
    unless `check_checkpoint(..., trust=True)` vouched for this very file; a file that is not a
    checkpoint at all (garbage, empty, truncated) is a ConfigError naming it."""
    import torch

    path = Path(path)
    if path.is_dir() or not path.exists():
        raise ConfigError(path, None, "no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" not in msg and "GLOBAL" not in msg:
            raise ConfigError(path, None, f"not a readable PyTorch checkpoint ({_first_line(msg)})") from None
        if str(path.resolve()) in _TRUSTED.get():
            return torch.load(path, map_location=map_location, weights_only=False)
        raise ConfigError(path, None, f"refused: loading it would run code or build objects the file names "
                                      f"({_first_line(msg)}); if you trust where it comes from, pass --trust-checkpoint") from None
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile, AttributeError, KeyError, TypeError,
            IndexError, MemoryError) as e:  # torch's reader raises any of these on a damaged file
        raise ConfigError(path, None, f"not a readable PyTorch checkpoint, or a truncated one "
                                      f"({type(e).__name__}: {_first_line(str(e))})") from None


def _finite_weights(obj, path) -> None:
    """A checkpoint whose tensors hold NaN/Inf would be scored as if it were a model: refuse it."""
    import torch

    bad, stack = [], [("", obj)]
    while stack:
        key, x = stack.pop()
        if isinstance(x, torch.Tensor) and x.is_floating_point() and not torch.isfinite(x).all():
            bad.append(key)
        elif isinstance(x, dict):
            stack += [(f"{key}.{k}" if key else str(k), v) for k, v in x.items()]
        elif isinstance(x, (list, tuple)):
            stack += [(f"{key}[{i}]", v) for i, v in enumerate(x)]
    if bad:
        raise ConfigError(path, None, f"{len(bad)} tensors hold NaN or Inf (e.g. {sorted(bad)[0]}): not a trained model's weights")


def _first_line(msg: str) -> str:
    """The informative line of torch's multi-line messages (the 'Unsupported global' one when there is one)."""
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    pick = next((ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln), lines[0] if lines else "")
    return pick[:200]


def interval_verdict(d_lo: float, d_hi: float, *, tolerance: float, margin: float) -> str:
    """The verdict of an interval of (ours - published), by the rule above."""
    if d_lo > tolerance:
        return "above"
    if d_hi < -tolerance:
        return "below"
    if d_lo >= -(tolerance + margin) and d_hi <= tolerance + margin:
        return "reproduced"
    return "inconclusive"


def binomial_verdict(correct: int, total: int, published: float, *, tolerance: float, margin: float) -> dict:
    from scipy.stats import binomtest

    ci = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="exact")
    acc, lo, hi = 100.0 * correct / total, 100.0 * ci.low, 100.0 * ci.high
    d_lo, d_hi = lo - published, hi - published
    return {"accuracy": acc, "ci_low": lo, "ci_high": hi, "published": published, "difference": acc - published,
            "interval_low": d_lo, "interval_high": d_hi, "tolerance": tolerance, "margin": margin,
            "verdict": interval_verdict(d_lo, d_hi, tolerance=tolerance, margin=margin),
            "published_inside_ci": lo <= published <= hi}


def metric_verdict(value: float, published: float, *, ci: tuple[float, float] | None, tolerance: float, margin: float) -> dict:
    """For a metric that is not a proportion (box AP): `ci` is a bootstrap interval over the evaluated
    images, or None on the whole set the published number was computed on, where there is no
    sampling uncertainty to add and the interval is the value itself."""
    lo, hi = ci if ci is not None else (value, value)
    d_lo, d_hi = lo - published, hi - published
    return {"value": value, "ci_low": lo, "ci_high": hi, "published": published, "difference": value - published,
            "interval_low": d_lo, "interval_high": d_hi, "tolerance": tolerance, "margin": margin,
            "verdict": interval_verdict(d_lo, d_hi, tolerance=tolerance, margin=margin),
            "published_inside_ci": lo <= published <= hi}


def check_checkpoint(recipe, checkpoint: Path, *, published: float, source: str, tolerance: float = 0.005,
                     margin: float = 1.0, name: str | None = None, trust: bool = False) -> dict:
    """Evaluate `checkpoint` with `recipe`; write reports/checks/<name>.json and .md.

    The file is opened weights-only before any family sees it (see `load_weights`); `trust` allows
    full unpickling of this one file."""
    import hashlib
    import shlex
    import sys

    import torch

    from .families import get_family, require

    require(recipe.family)
    family = get_family(recipe.family)
    token = _TRUSTED.set(_TRUSTED.get() | {str(Path(checkpoint).resolve())} if trust else _TRUSTED.get())
    try:
        obj = load_weights(checkpoint)  # refuse code, garbage, NaN and non-state-dicts here, whatever the family does next
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        if not isinstance(sd, dict) or not any(map(torch.is_tensor, sd.values())):
            raise ConfigError(checkpoint, None, f"holds a {type(sd).__name__}, not a state dict of tensors "
                                                "(nor {'state_dict': ...} or an MMEngine checkpoint)")
        _finite_weights(obj, checkpoint)
        name = name or f"{recipe.name}--{Path(checkpoint).stem}"
        out = paths.reports_dir() / "checks"
        with tempfile.TemporaryDirectory() as tmp:  # the predictions file, renamed after this check
            ev = family.evaluate(recipe, checkpoint, Path(tmp))
            if ev.predictions is not None:
                ev.predictions = _move(ev.predictions, out / f"{name}.{ev.predictions.name}")
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise
        what = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
        raise ConfigError(checkpoint, None, f"does not fit the model of recipe {recipe.name!r}: {what[:300]}") from None
    finally:
        _TRUSTED.reset(token)
    from datetime import datetime, timezone

    result = {"recipe": recipe.name, "checkpoint": Path(checkpoint).name,
              "evaluated_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "checkpoint_md5": hashlib.md5(Path(checkpoint).read_bytes()).hexdigest(), "source": source,
              "command": shlex.join(["reprozoo", *sys.argv[1:]]) if sys.argv[0].endswith("reprozoo") else None,
              **ev.to_dict()}
    if ev.predictions is not None:
        result["predictions"] = ev.predictions.name
    if ev.correct is not None:  # a proportion: the exact binomial interval
        result.update(binomial_verdict(ev.correct, ev.total, published, tolerance=tolerance, margin=margin))
    else:
        boot = ev.bootstrap
        result.update(metric_verdict(ev.value, published, ci=(boot["ci_low"], boot["ci_high"]) if boot else None,
                                     tolerance=tolerance, margin=margin))
    write_json(out / f"{name}.json", result)
    atomic_write_text(out / f"{name}.md", markdown(result) if ev.correct is not None else metric_markdown(result))
    from .reports import write_index

    write_index()
    return result


def _move(src: Path, dst: Path) -> Path:
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(src, dst)
    return dst


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


def metric_markdown(r: dict) -> str:
    boot = r.get("bootstrap")
    how = (f"percentile bootstrap over the {r['total']} evaluated images ({boot['replicates']} resamples): the sampling "
           "uncertainty of a subset" if boot else
           f"none added: all {r['total']} images of the {r['split']} split were evaluated, the set the published number comes from")
    extra = ", ".join(f"{k} {v:.2f}" for k, v in r.get("metrics", {}).items())
    return "\n".join([
        f"# Published checkpoint `{r['checkpoint']}` through recipe `{r['recipe']}`", "",
        f"Command: `{r['command'] or 'reprozoo eval ' + r['recipe'] + ' --checkpoint ' + r['checkpoint']}`; "
        f"checkpoint md5 `{r['checkpoint_md5']}`. Published: {r['source']}.", "",
        f"| evaluated images | {r['metric']} | 95% interval | published | ours − published [95% interval] | verdict |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {r['total']} ({r['split']} split) | {r['value']:.2f} | [{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {r['published']:.2f} | "
        f"{r['difference']:+.2f} [{r['interval_low']:+.2f}, {r['interval_high']:+.2f}] | **{r['verdict']}** |", "",
        f"All metrics: {extra}." if extra else "", "",
        f"Interval: {how}. `reproduced`: the whole interval lies within ±(tolerance {r['tolerance']:g} + margin "
        f"{r['margin']:g}) of the published value; `below`/`above`: entirely beyond ±tolerance; otherwise `inconclusive`.", ""])
