"""Per-sample predictions of an evaluation: the files every family writes next to a run's metrics
(`runs/<recipe>/seed<N>/predictions.*`) and next to a checkpoint's check (`reports/checks/`).

- `predictions.csv` (classification, text): `id,label,prediction,score,loss` per evaluated sample;
  `id` is the sample's index in its split's file (for `eval.split: val`, in the training set),
  `score` the probability of the prediction, `loss` the cross-entropy of the label (regression,
  STS-B: `score` is the prediction and `loss` the squared error). A text task with several
  evaluation splits (MNLI) writes `predictions.<split>.csv`.
- `predictions.csv` (segmentation): `id,image,` then `c<label>_<pred>` pixel counts, one row per image
  (its confusion matrix flattened), so any IoU or Dice can be recomputed per image or per set.
- `predictions.bbox.json` (detection): the per-image detections in COCO results format
  (`image_id, category_id, bbox [x, y, w, h], score`).

Floats are written with 6 significant digits: the file is a view of the run, `metrics.json` its record.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

LABELS = "predictions.csv"
BOXES = "predictions.bbox.json"
LABEL_COLUMNS = ("id", "label", "prediction", "score", "loss")


def write_labels(out_dir: Path, ids, labels, probs, name: str = LABELS) -> Path:
    """Classification predictions from the evaluated samples' class probabilities (N, C)."""
    import torch

    probs = torch.as_tensor(probs, dtype=torch.float64).cpu()
    labels = torch.as_tensor(labels).long().cpu()
    score, pred = probs.max(-1)
    loss = -probs.gather(1, labels[:, None]).squeeze(1).clamp_min(1e-12).log()
    ids = list(range(len(labels))) if ids is None else [int(i) for i in ids]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LABEL_COLUMNS)
    for row in zip(ids, labels.tolist(), pred.tolist(), score.tolist(), loss.tolist()):
        w.writerow([row[0], row[1], row[2], f"{row[3]:.6g}", f"{row[4]:.6g}"])
    return _write(Path(out_dir) / name, buf.getvalue())


def write_scores(out_dir: Path, labels, preds, name: str = LABELS) -> Path:
    """Regression predictions (STS-B): the prediction as `score`, its squared error as `loss`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LABEL_COLUMNS)
    for i, (y, p) in enumerate(zip(map(float, labels), map(float, preds))):
        w.writerow([i, f"{y:.6g}", f"{p:.6g}", f"{p:.6g}", f"{(p - y) ** 2:.6g}"])
    return _write(Path(out_dir) / name, buf.getvalue())


def write_confusions(out_dir: Path, images: list[str], confusions) -> Path:
    """Segmentation predictions: one (K, K) pixel confusion matrix (rows: label, columns: prediction) per image."""
    import numpy as np

    confusions = [np.asarray(c, dtype=np.int64) for c in confusions]
    k = confusions[0].shape[0] if confusions else 0
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "image", *(f"c{i}_{j}" for i in range(k) for j in range(k))])
    for n, (img, c) in enumerate(zip(images, confusions)):
        w.writerow([n, img, *c.flatten().tolist()])
    return _write(Path(out_dir) / LABELS, buf.getvalue())


def write_boxes(out_dir: Path, detections: list[dict]) -> Path:
    """Detection predictions in COCO results format."""
    rows = [{"image_id": int(d["image_id"]), "category_id": int(d["category_id"]),
             "bbox": [round(float(v), 2) for v in d["bbox"]], "score": float(f"{float(d['score']):.6g}")} for d in detections]
    return _write(Path(out_dir) / BOXES, json.dumps(rows, indent=None) + "\n")


def _write(path: Path, text: str) -> Path:
    from .io import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path
