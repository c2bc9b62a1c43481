"""Sanity checks for a segmentation recipe, on its MMSegmentation pipeline and model (see `reprozoo.checks`)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from ...checks import Check, run_in_scratch
from ..openmmlab_checks import batch, channel_problems, determinism, drop_dropout, fit, setup, throughput
from .engine import build_runner


def _setup(recipe, seed: int, work: Path):
    return setup(build_runner, recipe, seed, work)


def _labels(samples) -> torch.Tensor:
    return torch.stack([s.gt_sem_seg.data[0] for s in samples])


def _num_classes(model) -> int:
    return model.decode_head.num_classes


def _dice(model, inputs, labels, train_mode: bool = False) -> float:
    """Foreground Dice (percent) of the model's prediction on a batch, whole-crop inference; eval mode unless
    `train_mode` (batch statistics, as the batch was fitted)."""
    model.train(train_mode)
    with torch.no_grad():
        pred = model.encode_decode(inputs, [dict(img_shape=inputs.shape[-2:], pad_shape=inputs.shape[-2:])] * len(inputs)).argmax(1)
    fg, gt = pred == _num_classes(model) - 1, labels == _num_classes(model) - 1
    return 100 * 2 * float((fg & gt).sum()) / max(1, float(fg.sum() + gt.sum()))


def input_audit(recipe, seed, work) -> Check:
    runner, loader = _setup(recipe, seed, work)
    b = batch(runner, loader)
    x, y, n_cls = b["inputs"].float(), _labels(b["data_samples"]), _num_classes(runner.model)
    problems, channels = channel_problems(x)
    values = sorted(set(torch.unique(y).tolist()))
    bad = [v for v in values if not (0 <= v < n_cls or v == 255)]
    if bad:
        problems.append(f"label values {bad} outside the classes 0..{n_cls - 1} and the ignore index 255 (masks not converted to class ids?)")
    counted = y[y != 255]
    fg = 100 * float((counted == n_cls - 1).float().mean()) if counted.numel() else 0.0
    if fg == 0:
        problems.append("no foreground pixel in the batch: masks empty, or stored as 0/255 so that 255 is ignored")
    rows = [f"inputs {tuple(b['inputs'].shape)} {b['inputs'].dtype}; labels {tuple(y.shape)}, values {values}; "
            f"foreground {fg:.1f}% of the labelled pixels, ignored (255) {100 * float((y == 255).float().mean()):.1f}%"] + channels
    return Check("input audit", not problems, "; ".join(problems) or "normalised, finite, labels are class ids, foreground present", rows)


def look_at_data(recipe, seed, work, out_png: Path, k: int = 8) -> Check:
    """Augmented training crops with their masks overlaid, and the training set's foreground fraction and image sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    runner, loader = _setup(recipe, seed, work)
    b = batch(runner, loader, k)
    pre = runner.model.data_preprocessor
    imgs = (b["inputs"].float() * pre.std + pre.mean).clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()  # RGB after bgr_to_rgb
    y = _labels(b["data_samples"]).numpy()
    n_cls = _num_classes(runner.model)
    cols = min(k, len(imgs))
    fig, axes = plt.subplots(2, cols, figsize=(1.6 * cols, 3.4), squeeze=False)
    for i in range(cols):
        axes[0, i].imshow(imgs[i])
        overlay = imgs[i].copy()
        overlay[y[i] == n_cls - 1] = (0, 255, 0)
        overlay[y[i] == 255] = (255, 0, 255)
        axes[1, i].imshow(overlay)
        for a in axes[:, i]:
            a.axis("off")
    fig.suptitle(f"{recipe.name}: augmented crops; below, foreground in green (ignored in magenta)", fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100, metadata={"Software": None})
    plt.close(fig)

    dataset = loader.dataset.dataset if hasattr(loader.dataset, "times") else loader.dataset
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    sizes = sorted({Image.open(d["img_path"]).size for d in infos})
    masks = [np.asarray(Image.open(d["seg_map_path"])) for d in infos]
    fracs = np.array([100 * float((m == n_cls - 1).mean()) for m in masks])
    ok = bool(fracs.min() > 0)
    rows = [f"{len(infos)} training images; sizes (w x h): {', '.join(f'{w}x{h}' for w, h in sizes)}",
            f"foreground per image: mean {fracs.mean():.1f}%, min {fracs.min():.1f}%, max {fracs.max():.1f}% of the pixels"
            + ("" if ok else ": some masks have no foreground")]
    return Check("look at the data", ok, f"{cols} augmented crops with masks in {out_png.name}; foreground {fracs.mean():.1f}% of the training pixels",
                 rows, [out_png.name])


def overfit_batch(recipe, seed, work, samples: int = 4, steps: int = 150, lr: float = 3e-3) -> Check:
    """A few fixed crops, dropout off, Adam: the loss must fall near zero and the crops' Dice reach the top."""
    runner, loader = _setup(recipe, seed, work)
    model = runner.model
    b = batch(runner, loader, samples)
    x, samples_, y = b["inputs"], b["data_samples"], _labels(b["data_samples"])
    drop_dropout(model)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    losses = fit(model, x, samples_, steps, lr)
    dice = _dice(model, x, y, train_mode=True)
    ok = losses[-1] < 0.1 and dice >= 90
    hint = "" if ok else ("; frozen: " + ", ".join(frozen[:5]) if frozen else ": check the masks (class ids), the loss and the learning rate")
    return Check("overfit one batch", ok, f"loss {losses[0]:.3f} -> {losses[-1]:.4f}, foreground Dice {dice:.1f} (train mode) on {samples} crops in {steps} Adam steps" + hint,
                 [f"step {i}: {losses[i]:.4f}" for i in (0, steps // 4, steps // 2, steps - 1)])


def trivial_solution(recipe, seed, work, steps: int = 60, lr: float = 3e-3) -> Check:
    """Inputs that are the mask itself (every channel +-1) must be segmented almost at once."""
    runner, loader = _setup(recipe, seed, work)
    model = runner.model
    b = batch(runner, loader)
    y = _labels(b["data_samples"])
    x = ((y == _num_classes(model) - 1).float() * 2 - 1)[:, None].expand_as(b["inputs"]).contiguous()
    fit(model, x, b["data_samples"], steps, lr)
    dice = _dice(model, x, y)
    ok = dice >= 95
    return Check("trivial solution", ok, f"foreground Dice {dice:.1f} after {steps} steps on inputs that are the mask"
                 + ("" if ok else ": the wiring between masks and loss is broken (class ids, ignore index, num_classes)"), [])


def mode_audit(recipe, seed, work) -> Check:
    runner, loader = _setup(recipe, seed, work)
    model, x = runner.model, batch(runner, loader)["inputs"]
    meta = [dict(img_shape=x.shape[-2:], pad_shape=x.shape[-2:])] * len(x)
    with torch.no_grad():
        model.eval()
        e1, e2 = model.encode_decode(x, meta), model.encode_decode(x, meta)
        model.train()
        t1 = model.encode_decode(x, meta)
    eval_same, differs = torch.equal(e1, e2), not torch.equal(e1, t1)
    ok = eval_same and differs
    return Check("mode audit", ok, "eval is deterministic; train mode differs (dropout, batch statistics)" if ok else
                 "eval mode gives different outputs for the same batch" if not eval_same else
                 "train and eval give identical outputs: are dropout and BatchNorm ever switched?", [])


def run_checks(recipe, seed: int, out_png: Path) -> list[Check]:
    checks = [("input audit", input_audit), ("overfit one batch", overfit_batch), ("trivial solution", trivial_solution),
              ("mode audit", mode_audit), ("determinism", partial(determinism, build_runner)), ("throughput", partial(throughput, build_runner))]
    return run_in_scratch(checks, look_at_data, recipe, seed, out_png)
