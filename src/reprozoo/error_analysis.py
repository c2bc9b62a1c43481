"""`reprozoo errors RECIPE [--seed N ...]`: what a recipe's finished runs get wrong, from the predictions
each run wrote (`reprozoo.predictions`), into `reports/errors/<recipe>.{md,json}` and pictures.

- labels (classification, text): per-class precision / recall / F1 (scikit-learn, mean and sd over the
  seeds), the confusion matrix summed over the seeds (PNG, rows normalised), the samples with the highest
  loss averaged over the seeds (drawn, or decoded text, by the family's `render_samples`), and the
  samples on which the seeds disagree. The test-set sampling error of the headline accuracy (a
  percentile bootstrap over samples, per seed) is set beside the seed spread: when it is of the same
  size, more seeds alone cannot settle a verdict (docs/statistics.md).
- regression (STS-B): the highest squared errors and the seed spread per sample.
- segmentation: per-class IoU / Dice from the pixel counts, the confusion matrix, the images with the
  lowest foreground Dice, and the images whose Dice varies most across seeds.
- detection: detections per category and per image (score >= 0.5), the images with the fewest
  confident detections, and those whose count varies most across seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import paths
from .errors import ConfigError
from .io import atomic_write_text, write_json

TOP = 16  # samples drawn in the highest-loss grid
BOOT = 1000  # bootstrap resamples of the sampling error


def read_predictions(path: Path) -> dict[str, list]:
    """A predictions CSV as columns (ints, floats, or file names)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ConfigError(path, None, "no predictions in this file")
    cols: dict[str, list] = {k: [] for k in rows[0]}
    for r in rows:
        for k, v in r.items():
            cols[k].append(v if k == "image" else _number(v))
    return cols


def _number(v: str):
    try:
        return int(v)
    except ValueError:
        return float(v)


def prediction_files(recipe_name: str, seeds: list[int] | None) -> dict[int, Path]:
    """Each requested finished seed's predictions file (the headline split's, for text with several)."""
    from .runs import existing_seeds, run_dir

    have = existing_seeds(recipe_name)
    if not have:
        raise ConfigError(paths.runs_dir() / recipe_name, None, f"no finished runs of recipe {recipe_name!r}: "
                                                                f"`reprozoo run {recipe_name} --seed 0` trains one")
    seeds = seeds or have
    missing = [s for s in seeds if s not in have]
    if missing:
        raise ConfigError(paths.runs_dir() / recipe_name, "--seed", f"no finished run for seed(s) {missing}", have)
    out = {}
    for s in seeds:
        d = run_dir(recipe_name, s)
        files = sorted(d.glob("predictions.csv")) or sorted(d.glob("predictions*.csv")) or sorted(d.glob("predictions.bbox.json"))
        if not files:
            raise ConfigError(d, None, "this run has no predictions file (trained before reprozoo wrote them): "
                                       f"`reprozoo run {recipe_name} --seed {s} --force` trains it again")
        out[s] = files[0]
    return out


def analyse(recipe, seeds: list[int] | None = None) -> dict:
    """Write `reports/errors/<recipe>.{md,json}` (and PNGs); return the JSON's content."""
    from .families import get_family

    files = prediction_files(recipe.name, seeds)
    out = paths.reports_dir() / "errors"
    out.mkdir(parents=True, exist_ok=True)
    family = get_family(recipe.family)
    first = next(iter(files.values()))
    if first.suffix == ".json":
        result = _boxes(recipe, family, {s: json.loads(p.read_text()) for s, p in files.items()}, out)
    else:
        cols = {s: read_predictions(p) for s, p in files.items()}
        head = next(iter(cols.values()))
        if "image" in head:
            result = _pixels(recipe, family, cols, out)
        elif all(isinstance(v, int) for v in head["label"]):
            result = _labels(recipe, family, cols, out)
        else:
            result = _regression(recipe, family, cols, out)
    result.update(recipe=recipe.name, seeds=sorted(files), files={s: str(p.relative_to(paths.project_root()))
                                                                  for s, p in files.items()})
    write_json(out / f"{recipe.name}.json", result)
    atomic_write_text(out / f"{recipe.name}.md", markdown(result))
    return result


def _aligned(cols: dict[int, dict], key: str) -> tuple[list, np.ndarray]:
    """(ids, values (seeds, samples)) with every seed's rows in the first seed's id order."""
    ids = next(iter(cols.values()))["id"]
    rows = []
    for s, c in cols.items():
        pos = dict(zip(c["id"], range(len(c["id"]))))
        if set(pos) != set(ids):
            raise ConfigError(paths.runs_dir(), f"seed{s}", "its predictions cover other samples than the other seeds' "
                                                            "(another evaluation split or dataset version)")
        rows.append([c[key][pos[i]] for i in ids])
    return ids, np.asarray(rows)


def _labels(recipe, family, cols, out: Path) -> dict:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids, y = _aligned(cols, "label")
    _, pred = _aligned(cols, "prediction")
    _, loss = _aligned(cols, "loss")
    labels = y[0]
    k = int(max(labels.max(), pred.max())) + 1
    names = _class_names(recipe, k)
    per_seed = np.stack([np.stack(precision_recall_fscore_support(labels, p, labels=range(k), zero_division=0)[:3]) for p in pred])
    conf = sum(confusion_matrix(labels, p, labels=range(k)) for p in pred)
    acc = 100 * (pred == labels).mean(1)
    rng = np.random.default_rng(0)
    n = len(labels)
    draws = rng.integers(0, n, (BOOT, n))
    sampling = [float(np.std(100 * (p == labels)[draws].mean(1), ddof=1)) for p in pred]
    mean_loss = loss.mean(0)
    top = np.argsort(-mean_loss, kind="stable")[:TOP]
    votes = [np.bincount(pred[:, j], minlength=k) for j in range(n)]
    disagree = [j for j in range(n) if votes[j].max() < len(pred)]
    always_wrong = int(((pred != labels).all(0)).sum())
    titles = [f"{names[labels[j]]}→{names[np.bincount(pred[:, j]).argmax()]} loss {mean_loss[j]:.2f}" for j in top]
    grid = family.render_samples(recipe, [ids[j] for j in top], titles, out / f"{recipe.name}-highest-loss.png")
    png = _confusion_png(conf, names, out / f"{recipe.name}-confusion.png", f"{recipe.name}: confusion over {len(pred)} seeds")
    pairs = [(names[i], names[j], int(conf[i, j])) for i in range(k) for j in range(k) if i != j]
    pairs.sort(key=lambda t: -t[2])
    return {
        "kind": "labels", "samples": n, "classes": names,
        "accuracy": {"per_seed": acc.tolist(), "mean": float(acc.mean()), "seed_sd": float(acc.std(ddof=1)) if len(acc) > 1 else None,
                     "sampling_sd": float(np.mean(sampling)), "sampling_method": f"percentile bootstrap over the {n} samples, {BOOT} resamples, per seed"},
        "per_class": [{"class": names[c], "support": int((labels == c).sum()),
                       "precision": float(per_seed[:, 0, c].mean() * 100), "recall": float(per_seed[:, 1, c].mean() * 100),
                       "f1": float(per_seed[:, 2, c].mean() * 100),
                       "f1_sd": float(per_seed[:, 2, c].std(ddof=1) * 100) if len(pred) > 1 else None} for c in range(k)],
        "confusion": conf.tolist(), "confusion_png": png.name, "top_confusions": pairs[:5],
        "highest_loss": [{"id": ids[j], "label": names[labels[j]], "predictions": [names[p] for p in pred[:, j]],
                          "mean_loss": float(mean_loss[j])} for j in top],
        "highest_loss_file": grid.name,
        "disagreement": {"samples": len(disagree), "fraction": len(disagree) / n, "always_wrong": always_wrong,
                         "examples": [{"id": ids[j], "label": names[labels[j]], "predictions": [names[p] for p in pred[:, j]]}
                                      for j in disagree[:10]]},
    }


def _regression(recipe, family, cols, out: Path) -> dict:
    ids, y = _aligned(cols, "label")
    _, pred = _aligned(cols, "prediction")
    err = (pred - y) ** 2
    top = np.argsort(-err.mean(0), kind="stable")[:TOP]
    titles = [f"label {y[0, j]:.2f}, predicted {pred[:, j].mean():.2f}" for j in top]
    listing = family.render_samples(recipe, [ids[j] for j in top], titles, out / f"{recipe.name}-highest-loss.png")
    spread = pred.std(0, ddof=1) if len(pred) > 1 else np.zeros(pred.shape[1])
    return {"kind": "regression", "samples": len(ids), "highest_loss_file": listing.name,
            "highest_loss": [{"id": ids[j], "label": float(y[0, j]), "predictions": pred[:, j].tolist()} for j in top],
            "disagreement": {"most_spread": [{"id": ids[j], "sd": float(spread[j])} for j in np.argsort(-spread, kind="stable")[:10]]}}


def _pixels(recipe, family, cols, out: Path) -> dict:
    first = next(iter(cols.values()))
    conf_keys = [c for c in first if c.startswith("c")]
    k = int(round(len(conf_keys) ** 0.5))
    images = first["image"]
    per = {}  # seed -> (images, K, K)
    for s, c in cols.items():
        pos = dict(zip(c["image"], range(len(c["image"]))))
        per[s] = np.stack([np.array([c[key][pos[im]] for key in conf_keys], dtype=np.float64).reshape(k, k) for im in images])
    total = sum(v.sum(0) for v in per.values())
    tp = np.diag(total)
    iou = tp / (total.sum(0) + total.sum(1) - tp)
    dice = 2 * tp / (total.sum(0) + total.sum(1))
    img_dice = np.stack([100 * 2 * v[:, -1, -1] / (v[:, -1].sum(-1) + v[:, :, -1].sum(-1)) for v in per.values()])
    mean = np.nanmean(img_dice, 0)
    worst = np.argsort(mean, kind="stable")[:TOP]
    names = _class_names(recipe, k)
    grid = family.render_samples(recipe, [images[j] for j in worst], [f"Dice {mean[j]:.1f}" for j in worst],
                                 out / f"{recipe.name}-highest-loss.png")
    png = _confusion_png(total.astype(np.int64), names, out / f"{recipe.name}-confusion.png", f"{recipe.name}: pixels over {len(per)} seeds")
    spread = np.nanstd(img_dice, 0, ddof=1) if len(per) > 1 else np.zeros(len(images))
    return {"kind": "pixels", "samples": len(images), "classes": names,
            "per_class": [{"class": names[c], "iou": float(100 * iou[c]), "dice": float(100 * dice[c])} for c in range(k)],
            "confusion": total.astype(np.int64).tolist(), "confusion_png": png.name, "highest_loss_file": grid.name,
            "highest_loss": [{"id": images[j], "dice": float(mean[j])} for j in worst],
            "disagreement": {"most_spread": [{"id": images[j], "dice_sd": float(spread[j])} for j in np.argsort(-spread, kind="stable")[:10]]}}


def _boxes(recipe, family, dets: dict[int, list], out: Path) -> dict:
    images = sorted({d["image_id"] for ds in dets.values() for d in ds})
    counts = np.array([[sum(1 for d in ds if d["image_id"] == i and d["score"] >= 0.5) for i in images] for ds in dets.values()])
    cats = sorted({d["category_id"] for ds in dets.values() for d in ds})
    per_cat = [{"category_id": c, "confident_per_seed": float(np.mean([sum(1 for d in ds if d["category_id"] == c and d["score"] >= 0.5)
                                                                        for ds in dets.values()]))} for c in cats]
    mean = counts.mean(0) if len(images) else np.zeros(0)
    fewest = np.argsort(mean, kind="stable")[:TOP]
    grid = family.render_samples(recipe, [images[j] for j in fewest], [f"{mean[j]:.1f} confident boxes" for j in fewest],
                                 out / f"{recipe.name}-highest-loss.png")
    spread = counts.std(0, ddof=1) if len(counts) > 1 else np.zeros(len(images))
    return {"kind": "boxes", "samples": len(images), "per_category": per_cat, "highest_loss_file": grid.name,
            "highest_loss": [{"id": images[j], "confident_boxes": float(mean[j])} for j in fewest],
            "disagreement": {"most_spread": [{"id": images[j], "count_sd": float(spread[j])} for j in np.argsort(-spread, kind="stable")[:10]]}}


def _class_names(recipe, k: int) -> list[str]:
    from .families import get_family

    ds = get_family(recipe.family).datasets.get(recipe.config["dataset"]["name"])
    names = getattr(ds, "classes", None)
    task = getattr(ds, "task", None)  # text: a GLUE task's label names
    names = names or (getattr(task, "labels", None) if task is not None else None)
    return [str(n) for n in names] if names and len(names) >= k else [str(i) for i in range(k)]


def _confusion_png(conf: np.ndarray, names: list[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * k, 1 + 0.45 * k))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(conf[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def markdown(r: dict) -> str:
    lines = [f"# Errors of `{r['recipe']}` (seeds {', '.join(map(str, r['seeds']))})", "",
             f"Command: `reprozoo errors {r['recipe']}`; from each run's predictions file. {r['samples']} evaluated samples.", ""]
    if r["kind"] == "labels":
        a = r["accuracy"]
        sd = f"{a['seed_sd']:.2f}" if a["seed_sd"] is not None else "n/a (one seed)"
        lines += [f"Accuracy {a['mean']:.2f} over the seeds; seed sd {sd}; test-set sampling sd {a['sampling_sd']:.2f} "
                  f"({a['sampling_method']}). The sampling sd is what a different draw of the same number of test samples "
                  "would move one run's accuracy by: it does not shrink with more seeds.", "",
                  "| class | support | precision | recall | F1 | F1 sd over seeds |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {c['class']} | {c['support']} | {c['precision']:.1f} | {c['recall']:.1f} | {c['f1']:.1f} | "
                  f"{'n/a' if c['f1_sd'] is None else format(c['f1_sd'], '.1f')} |" for c in r["per_class"]]
        lines += ["", f"![confusion]({r['confusion_png']})", "",
                  "Most frequent confusions (label → prediction, summed over seeds): "
                  + "; ".join(f"{a} → {b}: {n}" for a, b, n in r["top_confusions"]) + ".", ""]
        d = r["disagreement"]
        lines += [f"Seeds disagree on {d['samples']} samples ({100 * d['fraction']:.1f}%); every seed is wrong on {d['always_wrong']}.", ""]
    elif r["kind"] == "pixels":
        lines += ["| class | IoU | Dice |", "|---|---:|---:|"]
        lines += [f"| {c['class']} | {c['iou']:.2f} | {c['dice']:.2f} |" for c in r["per_class"]]
        lines += ["", f"![confusion]({r['confusion_png']})", ""]
    elif r["kind"] == "boxes":
        lines += ["| category id | confident detections per seed (score >= 0.5) |", "|---:|---:|"]
        lines += [f"| {c['category_id']} | {c['confident_per_seed']:.1f} |" for c in r["per_category"]]
        lines += [""]
    f = r["highest_loss_file"]
    lines += [f"Highest-loss samples (mean over seeds): [{f}]({f})" + ("" if f.endswith(".md") else f"\n\n![highest loss]({f})"), ""]
    return "\n".join(lines)
