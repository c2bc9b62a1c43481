"""Sanity checks for a detection recipe, on its MMDetection pipeline and model (see `reprozoo.checks`)."""
from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ...checks import Check, run_in_scratch
from ..openmmlab_checks import batch, channel_problems, determinism, drop_dropout, fit, setup, throughput
from .engine import build_runner
from .tricks import box_head

# COCO's object-size buckets (pycocotools COCOeval.params.areaRng)
SMALL, MEDIUM = 32 ** 2, 96 ** 2


def _setup(recipe, seed: int, work: Path):
    return setup(partial(build_runner, download=False), recipe, seed, work)


def _classes(loader) -> tuple:
    return tuple(loader.dataset.metainfo["classes"])


def _recall(model, inputs, samples, iou: float = 0.5, score: float = 0.3) -> float:
    """Percent of ground-truth boxes found by a prediction of the right class (IoU >= `iou`, score >= `score`)."""
    from mmdet.structures.bbox import bbox_overlaps

    with torch.no_grad():
        preds = model.predict(inputs, [s.clone() for s in samples], rescale=False)
    found = total = 0
    for p, s in zip(preds, samples):
        gt, keep = s.gt_instances, p.pred_instances.scores >= score
        total += len(gt)
        boxes, labels = p.pred_instances.bboxes[keep], p.pred_instances.labels[keep]
        if len(gt) and len(boxes):
            ov = bbox_overlaps(gt.bboxes.tensor if hasattr(gt.bboxes, "tensor") else gt.bboxes, boxes)
            ov[gt.labels[:, None] != labels[None, :]] = 0
            found += int((ov.max(1).values >= iou).sum())
    return 100.0 * found / max(1, total)


def input_audit(recipe, seed, work) -> Check:
    runner, loader = _setup(recipe, seed, work)
    b = batch(runner, loader)
    x, samples = b["inputs"], b["data_samples"]
    n_cls = box_head(runner.cfg).num_classes
    problems, channels = channel_problems(x)
    labels = torch.cat([s.gt_instances.labels for s in samples])
    boxes = torch.cat([s.gt_instances.bboxes.tensor if hasattr(s.gt_instances.bboxes, "tensor") else s.gt_instances.bboxes for s in samples])
    if len(labels) == 0:
        problems.append("no box in the batch: annotations not loaded (LoadAnnotations with_bbox, ann_file, category names)")
    bad = sorted({int(v) for v in labels if not 0 <= v < n_cls})
    if bad:
        problems.append(f"labels {bad} outside the head's classes 0..{n_cls - 1} (num_classes vs the dataset's classes)")
    h, w = x.shape[-2:]
    wh = boxes[:, 2:] - boxes[:, :2]
    if len(boxes) and ((wh <= 0).any() or (boxes[:, :2] < -1).any() or (boxes[:, 2] > w + 1).any() or (boxes[:, 3] > h + 1).any()):
        problems.append("boxes with no area or outside the padded image: check xywh vs xyxy in the annotations")
    names = _classes(loader)
    counts = Counter(names[int(v)] if int(v) < len(names) else int(v) for v in labels)
    rows = [f"inputs {tuple(x.shape)} {x.dtype}; {len(labels)} boxes in {len(samples)} images; classes in the batch: "
            + ", ".join(f"{k} {v}" for k, v in counts.most_common())] + channels
    return Check("input audit", not problems, "; ".join(problems) or "normalised, finite, boxes inside the images, labels within the head's classes", rows)


def look_at_data(recipe, seed, work, out_png: Path, k: int = 6) -> Check:
    """Augmented training images with their boxes and class names, and the training set's class
    distribution, image sizes and object sizes in COCO's small/medium/large buckets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    runner, loader = _setup(recipe, seed, work)
    b = batch(runner, loader, k)
    pre, names = runner.model.data_preprocessor, _classes(loader)
    imgs = (b["inputs"].float() * pre.std + pre.mean).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    cols = len(imgs)
    fig, axes = plt.subplots(1, cols, figsize=(2.6 * cols, 2.4), squeeze=False)
    for i, s in enumerate(b["data_samples"]):
        ax = axes[0, i]
        ax.imshow(imgs[i])
        gt = s.gt_instances
        for box, label in zip((gt.bboxes.tensor if hasattr(gt.bboxes, "tensor") else gt.bboxes).tolist(), gt.labels.tolist()):
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="lime", lw=1))
            ax.text(box[0], box[1], names[label] if label < len(names) else label, color="black", backgroundcolor="lime", fontsize=5)
        ax.axis("off")
    fig.suptitle(f"{recipe.name}: augmented training images with their boxes", fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100, metadata={"Software": None})
    plt.close(fig)

    dataset = loader.dataset
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    classes = Counter(names[inst["bbox_label"]] for d in infos for inst in d["instances"])
    areas = np.array([(inst["bbox"][2] - inst["bbox"][0]) * (inst["bbox"][3] - inst["bbox"][1]) for d in infos for inst in d["instances"]])
    sizes = Counter((d["width"], d["height"]) for d in infos)
    buckets = [100 * float(m.mean()) if len(areas) else 0.0 for m in (areas < SMALL, (areas >= SMALL) & (areas < MEDIUM), areas >= MEDIUM)]
    imbalance = max(classes.values()) / min(classes.values()) if classes else float("inf")
    ok = bool(classes) and imbalance < 100
    rows = [f"{len(infos)} training images, {len(areas)} boxes; classes present {len(classes)} of {len(names)}: "
            + ", ".join(f"{k} {v}" for k, v in classes.most_common(10)) + (" ..." if len(classes) > 10 else ""),
            f"objects by the original image's area: small (< 32^2) {buckets[0]:.1f}%, medium {buckets[1]:.1f}%, large (>= 96^2) {buckets[2]:.1f}%",
            "image sizes (w x h, count): " + ", ".join(f"{w}x{h} {n}" for (w, h), n in sizes.most_common(5)) + (" ..." if len(sizes) > 5 else "")]
    summary = (f"{cols} augmented images with boxes in {out_png.name}; objects small/medium/large {buckets[0]:.0f}/{buckets[1]:.0f}/{buckets[2]:.0f}%"
               + ("" if ok else f"; {'no boxes' if not classes else f'most/least frequent class {imbalance:.0f}x'}: check the annotations"))
    return Check("look at the data", ok, summary, rows, [out_png.name])


def overfit_batch(recipe, seed, work, samples: int = 2, steps: int = 100, lr: float = 3e-4) -> Check:
    """Two fixed images, no dropout, Adam: the loss must fall to a quarter of its start and most boxes be found
    (RPN and RoI sampling stay random, so a detector rarely fits every box of a batch exactly)."""
    runner, loader = _setup(recipe, seed, work)
    model = runner.model
    b = batch(runner, loader, samples)
    x, samples_ = b["inputs"], b["data_samples"]
    drop_dropout(model)
    frozen = sum(not p.requires_grad for p in model.parameters())
    losses = fit(model, x, samples_, steps, lr)
    model.eval()
    recall = _recall(model, x, samples_)
    ok = losses[-1] < 0.25 * losses[0] and recall >= 75
    hint = "" if ok else ": check the boxes (xywh vs xyxy), the labels and the learning rate"
    return Check("overfit one batch", ok, f"loss {losses[0]:.3f} -> {losses[-1]:.4f}, {recall:.0f}% of the {sum(len(s.gt_instances) for s in samples_)} "
                 f"boxes found (IoU >= 0.5, score >= 0.3) after {steps} Adam steps on {samples} images ({frozen} frozen tensors, as configured)" + hint,
                 [f"step {i}: {losses[i]:.4f}" for i in (0, steps // 4, steps // 2, steps - 1)])


def trivial_solution(recipe, seed, work, steps: int = 80, lr: float = 3e-4) -> Check:
    """Inputs that draw the boxes themselves (each class its own level, background -1) must be detected almost at once."""
    runner, loader = _setup(recipe, seed, work)
    model = runner.model
    b = batch(runner, loader)
    samples, n_cls = b["data_samples"], box_head(runner.cfg).num_classes
    x = -torch.ones_like(b["inputs"], dtype=torch.float32)
    for i, s in enumerate(samples):
        gt = s.gt_instances
        for box, label in zip((gt.bboxes.tensor if hasattr(gt.bboxes, "tensor") else gt.bboxes).round().int().tolist(), gt.labels.tolist()):
            x[i, :, box[1]:box[3], box[0]:box[2]] = 1 + label / max(1, n_cls - 1)
    fit(model, x, samples, steps, lr)
    model.eval()
    recall = _recall(model, x, samples)
    ok = recall >= 80
    return Check("trivial solution", ok, f"{recall:.0f}% of the boxes found after {steps} steps on inputs that draw them"
                 + ("" if ok else ": the wiring between boxes, labels and losses is broken (box format, num_classes, assigners)"), [])


def mode_audit(recipe, seed, work) -> Check:
    """Eval is deterministic; normalisation layers follow the config (frozen ones stay in eval mode when training)."""
    runner, loader = _setup(recipe, seed, work)
    model, b = runner.model, batch(runner, loader)
    model.eval()
    with torch.no_grad():
        p1 = model.predict(b["inputs"], [s.clone() for s in b["data_samples"]])
        p2 = model.predict(b["inputs"], [s.clone() for s in b["data_samples"]])
    same = all(torch.equal(a.pred_instances.bboxes, c.pred_instances.bboxes) for a, c in zip(p1, p2))
    model.train()
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    training = sum(m.training for m in norms)
    want_frozen = bool(runner.cfg.model.backbone.get("norm_eval", False))
    follows = training == 0 if want_frozen else training > 0
    ok = same and follows
    state = f"{training} of {len(norms)} backbone BatchNorms in train mode during training (config: norm_eval={want_frozen})"
    return Check("mode audit", ok, ("eval is deterministic; " + state) if ok else
                 "eval mode gives different boxes for the same batch" if not same else state + ": the model's train() does not honour norm_eval", [])


def run_checks(recipe, seed: int, out_png: Path) -> list[Check]:
    build = partial(build_runner, download=False)
    checks = [("input audit", input_audit), ("overfit one batch", overfit_batch), ("trivial solution", trivial_solution),
              ("mode audit", mode_audit), ("determinism", partial(determinism, build)), ("throughput", partial(throughput, build))]
    return run_in_scratch(checks, look_at_data, recipe, seed, out_png)
