"""Sanity checks for a classification recipe, on its real data pipeline and model (see `reprozoo.checks`)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...checks import Check, batch_size_scan, profile_top, run_in_scratch
from ...runs import RunContext
from ...seeding import seed_everything
from .datasets import DATASETS
from .engine import Classifier, runner_config


def _config(recipe, seed: int, work: Path) -> dict:
    """The recipe's Runner config for `seed` (tricks applied), built as a run builds it."""
    return runner_config(recipe, seed, RunContext(recipe, seed, work, work / "dvclive", threads=1, progress=False))


def _setup(recipe, seed: int, work: Path):
    """The recipe's Runner config, its model and its training loader."""
    cfg = _config(recipe, seed, work)
    return cfg, Classifier(**cfg["model"]), cfg["train_dataloader"]


def _fresh(recipe, seed: int, work: Path):
    """A new model, without the recipe's training-time augmentations, and the training loader."""
    cfg = _config(recipe, seed, work)
    m = cfg["model"]
    return Classifier(m["net"], m["num_classes"], normalize=m.get("normalize")), cfg["train_dataloader"]


def _update(opt, loss):
    """One optimizer step on `loss`; returns it."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def input_audit(recipe, seed, work) -> Check:
    cfg, model, loader = _setup(recipe, seed, work)
    batch = next(iter(loader))
    x, y = model.augment(batch["inputs"], batch["labels"])
    n_cls = model.num_classes
    labels = y.argmax(-1) if y.ndim == 2 else y
    problems = []
    xf = x.float()
    if not torch.isfinite(xf).all():
        problems.append(f"{int((~torch.isfinite(xf)).sum())} NaN/Inf values in the inputs")
    chans = xf.transpose(0, 1).reshape(xf.shape[1], -1) if xf.ndim >= 3 else xf.reshape(1, -1)
    mean, std, lo, hi = chans.mean(1), chans.std(1), chans.min(1).values, chans.max(1).values
    if float(hi.max()) > 20 or float(lo.min()) < -20:
        problems.append(f"inputs range [{float(lo.min()):.1f}, {float(hi.max()):.1f}]: not normalised (0-255 pixels?); "
                        "set the dataset's `normalize`")
    if (std == 0).any():
        problems.append(f"constant channel(s) {(std == 0).nonzero().flatten().tolist()}")
    if int(labels.min()) < 0 or int(labels.max()) >= n_cls:
        problems.append(f"labels outside [0, {n_cls - 1}]: min {int(labels.min())}, max {int(labels.max())}")
    counts = torch.bincount(labels.clamp(0, n_cls - 1), minlength=n_cls)
    rows = [f"batch {tuple(x.shape)} {x.dtype}, labels {tuple(y.shape)} {y.dtype}"] + [
        f"channel {i}: mean {float(mean[i]):.3f}, std {float(std[i]):.3f}, min {float(lo[i]):.3f}, max {float(hi[i]):.3f}"
        for i in range(min(len(mean), 8))] + [f"classes in the batch: {counts.tolist()}"]
    return Check("input audit", not problems, "; ".join(problems) or "finite, normalised, labels in range", rows)


def overfit_batch(recipe, seed, work, samples: int = 8, steps: int = 400, lr: float = 1e-3) -> Check:
    model, loader = _fresh(recipe, seed, work)
    train = loader.dataset
    if hasattr(train, "augment"):
        train.augment = False
    batch = train[list(range(samples))]
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        return Check("overfit one batch", False, f"no trainable parameters: all {len(frozen)} are frozen (requires_grad=False)", [])
    opt = torch.optim.Adam(trainable, lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = _update(opt, F.cross_entropy(model.net(model.prepare(batch["inputs"])), batch["labels"]))
        losses.append(float(loss))
    model.eval()
    with torch.no_grad():
        acc = float((model.net(model.prepare(batch["inputs"])).argmax(-1) == batch["labels"]).float().mean()) * 100
    ok = losses[-1] < 0.1 and acc == 100.0  # "close to zero": below 0.1 nats, every sample right
    hint = "" if ok else (f"; {len(frozen)} frozen parameter tensors" if frozen else "") + \
        "; look at the labels (do they match the inputs?), the loss, the learning rate and the model's output size"
    rows = [f"{samples} samples, Adam lr {lr:g}, augmentation and dropout off, {steps} steps",
            f"loss {losses[0]:.3f} -> {losses[steps // 2]:.3f} -> {losses[-1]:.4f}; train accuracy {acc:.1f}%"]
    return Check("overfit one batch", ok, f"final loss {losses[-1]:.4f}, accuracy {acc:.0f}%" + hint, rows)


def trivial_solution(recipe, seed, work, samples: int = 128, steps: int = 100) -> Check:
    """Inputs that carry the label: a model wired correctly to its loss learns them at once."""
    model, loader = _fresh(recipe, seed, work)
    train = loader.dataset
    batch = train[list(range(min(samples, len(train))))]
    y = batch["labels"]
    x = model.prepare(batch["inputs"]).detach().clone() * 0
    flat = x.view(len(x), -1)
    width = flat.shape[1] // model.num_classes
    for i, label in enumerate(y.tolist()):
        flat[i, label * width:(label + 1) * width] = 3.0  # a block of the input says which class it is
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    for _ in range(steps):
        _update(opt, F.cross_entropy(model.net(x), y))
    with torch.no_grad():
        acc = float((model.eval().net(x).argmax(-1) == y).float().mean()) * 100
    ok = acc >= 95
    return Check("trivial solution", ok, f"{acc:.0f}% after {steps} steps on inputs that encode the label"
                 + ("" if ok else ": the wiring between data, model output and loss is broken"), [])


def held_out_signal(recipe, seed, work, steps: int = 150, samples: int = 500, lr: float = 1e-3) -> Check:
    """A short training on the recipe's training batches must predict held-out labels better than always
    guessing the commonest class; labels that do not belong to their inputs (shuffled, misaligned) cannot."""
    from scipy.stats import binomtest

    cfg = _config(recipe, seed, work)
    m = cfg["model"]
    model = Classifier(m["net"], m["num_classes"], normalize=m.get("normalize"))
    held_out = cfg["test_dataloader"].dataset
    batch = held_out[list(range(min(samples, len(held_out))))]
    opt = torch.optim.Adam(model.parameters(), lr)
    it = iter(cfg["train_dataloader"])
    model.train()
    for _ in range(steps):
        b = next(it)
        loss = _update(opt, F.cross_entropy(model.net(model.prepare(b["inputs"])), b["labels"]))
    with torch.no_grad():
        correct = int((model.eval().net(model.prepare(batch["inputs"])).argmax(-1) == batch["labels"]).sum())
    y, n = batch["labels"], len(batch["labels"])
    chance = float(torch.bincount(y).max()) / n  # the best constant guess
    p = binomtest(correct, n, chance, alternative="greater").pvalue
    ok = p < 1e-3
    split = recipe.config["eval"]["split"]
    summary = (f"held-out accuracy {100 * correct / n:.1f}% on {n} {split} samples after {steps} steps, "
               f"vs {100 * chance:.1f}% for the commonest class (one-sided binomial p = {p:.2g})")
    if not ok:
        summary += (": no better than chance. Do the training labels belong to their inputs (shuffled or misaligned "
                    "labels)? Are the held-out inputs prepared as the training inputs are?")
    rows = [f"Adam lr {lr:g}, {steps} steps of the recipe's training batches (its augmentation on), a fresh model",
            f"loss at the last step {float(loss):.3f}"]
    return Check("held-out signal", ok, summary, rows)


def mode_audit(recipe, seed, work) -> Check:
    model, loader = _fresh(recipe, seed, work)
    train = loader.dataset
    x = model.prepare(train[list(range(16))]["inputs"])
    has_modes = any(isinstance(m, (torch.nn.Dropout, torch.nn.modules.batchnorm._BatchNorm)) for m in model.modules())
    with torch.no_grad():
        model.eval()
        e1, e2 = model.net(x), model.net(x)
        model.train()
        t = model.net(x)
    eval_det = torch.equal(e1, e2)
    differs = not torch.allclose(e1, t)
    ok = eval_det and (differs or not has_modes)
    detail = ("eval is deterministic" if eval_det else "eval gives different outputs on the same input") + "; " + (
        ("train and eval differ, as dropout/norm layers should" if differs else "train and eval outputs are equal although "
         "the model has dropout/norm layers: is model.train()/eval() reaching them?") if has_modes else "no dropout or norm layers")
    return Check("mode audit", ok, detail, [])


def determinism(recipe, seed, work, steps: int = 20) -> Check:
    def losses(s):
        seed_everything(s, deterministic=True, threads=1)
        model, loader = _fresh(recipe, s, work)
        opt = torch.optim.SGD(model.parameters(), 0.01)
        out, it = [], iter(loader)
        model.train()
        for _ in range(steps):
            b = next(it)
            loss = _update(opt, model(b["inputs"], b["labels"], mode="loss")["loss"])
            out.append(loss.item())
        return out

    a, b, c = losses(seed), losses(seed), losses(seed + 1)
    ok = a == b and a != c
    detail = ("same seed: identical losses" if a == b else f"same seed: losses differ from step {next(i for i in range(steps) if a[i] != b[i])}") + \
        ("; another seed: different" if a != c else "; another seed gives the same losses: is the seed used?")
    return Check("determinism", ok, detail, [f"seed {seed}: {a[:4]}...", f"seed {seed + 1}: {c[:4]}..."])


def throughput(recipe, seed, work, steps: int = 10) -> Check:
    cfg, model, loader = _setup(recipe, seed, work)
    opt = torch.optim.SGD(model.parameters(), 0.01)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    profile = profile_top(lambda: [next(it) for _ in range(steps)])
    t_load = (time.perf_counter() - t0) / steps
    batch_size = loader.batch_sampler.batch_size if loader.batch_sampler is not None else loader.sampler.batch_size
    wait = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        t1 = time.perf_counter()
        b = next(it)
        wait += time.perf_counter() - t1
        _update(opt, model(b["inputs"], b["labels"], mode="loss")["loss"])
    t_step = (time.perf_counter() - t0) / steps
    data = loader.dataset

    def step(bs):
        b = data[[i % len(data) for i in range(bs)]]
        _update(opt, model(b["inputs"], b["labels"], mode="loss")["loss"])

    sizes = [2 ** k for k in range(4, 11) if 2 ** k <= max(16, 2 * batch_size)]  # up to twice the recipe's batch
    rows = [f"loader alone: {batch_size / t_load:.0f} samples/s; full training steps: {batch_size / t_step:.0f} samples/s; "
            f"waiting for data: {100 * wait / (t_step * steps):.1f}% of step time",
            batch_size_scan(step, sizes, repeats=2), profile]
    input_bound = wait / (t_step * steps) > 0.5
    return Check("throughput", not input_bound, "input-bound: more than half of each step waits for data" if input_bound
                 else f"{batch_size / t_step:.0f} samples/s at batch {batch_size}; data wait {100 * wait / (t_step * steps):.1f}%", rows)


def look_at_data(recipe, seed, work, out_png: Path) -> Check:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, model, loader = _setup(recipe, seed, work)
    batch = next(iter(loader))
    x, y = model.augment(batch["inputs"], batch["labels"])
    labels = y.argmax(-1) if y.ndim == 2 else y
    names = getattr(DATASETS.get(recipe.config["dataset"]["name"]), "classes", None)  # else the label ids
    k = min(16, len(x))
    fig, axes = plt.subplots(2, 8, figsize=(12, 3.4))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        draw_sample(ax, x[i])
        ax.set_title(names[int(labels[i])] if names else str(int(labels[i])), fontsize=8)
    fig.suptitle(f"{recipe.name}: training inputs as the network receives them (augmented), with labels", fontsize=9)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90, metadata={"Software": None})
    plt.close(fig)
    all_y = loader.dataset.y if hasattr(loader.dataset, "y") else labels
    counts = np.bincount(all_y.numpy(), minlength=model.num_classes)
    ratio = counts.max() / max(counts.min(), 1)
    ok = ratio <= 10
    rows = [f"training set: {len(all_y)} samples, input shape {tuple(loader.dataset.x.shape[1:])}",
            "class counts: " + (", ".join(f"{n} {c}" for n, c in zip(names, counts.tolist())) if names else str(counts.tolist()))
            + f" (largest/smallest {ratio:.2f})"]
    return Check("look at the data", ok, f"grid of {k} augmented samples in {out_png.name}; "
                 + ("classes balanced within 10x" if ok else f"extreme class imbalance ({ratio:.0f}x)"), rows, [out_png.name])


def run_checks(recipe, seed: int, out_png: Path) -> list[Check]:
    checks = [("input audit", input_audit), ("overfit one batch", overfit_batch), ("trivial solution", trivial_solution),
              ("held-out signal", held_out_signal), ("mode audit", mode_audit), ("determinism", determinism), ("throughput", throughput)]
    return run_in_scratch(checks, look_at_data, recipe, seed, out_png)


def draw_sample(ax, x: torch.Tensor) -> None:
    """One input into `ax`: an image (C, H, W) scaled to its own range, or a signal as a line."""
    x = x.float()
    if x.ndim == 3:
        img = x.permute(1, 2, 0)
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        ax.imshow(img.squeeze(-1).numpy(), cmap="gray" if img.shape[-1] == 1 else None)
    else:
        ax.axis("on")
        ax.plot(x.flatten().numpy(), lw=1)
        ax.set_xticks([])
        ax.set_yticks([])


def render_samples(recipe, ids: list[int], titles: list[str], out: Path) -> Path:
    """The evaluation samples at `ids` (positions in the split's file) as a grid, each titled: `reprozoo errors`."""
    from functools import partial

    from ...checks import save_grid
    from ...datasets_store import ensure_prepared
    from .datasets import load_splits

    cfg = recipe.config
    dataset = DATASETS.build(cfg["dataset"])
    eval_set = load_splits(dataset, ensure_prepared(recipe.family, cfg["dataset"]["name"]), cfg["eval"])[1]
    pos = {int(i): n for n, i in enumerate(getattr(eval_set, "ids", range(len(eval_set.y))))}
    cells = [(title, partial(draw_sample, x=eval_set.x[pos[int(i)]])) for i, title in zip(ids, titles)]
    return save_grid(out, cells, cols=8, cell=(1.6, 1.5))
