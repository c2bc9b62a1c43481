"""Sanity-check pieces shared by the OpenMMLab families (see `reprozoo.checks`): the recipe's Runner
and training loader built in this process, one batch as the network receives it, and the
determinism and throughput checks, which only need a Runner's `train_step`."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from ..checks import Check, batch_size_scan, profile_top
from ..runs import RunContext


def setup(build_runner, recipe, seed: int, work: Path):
    """The recipe's Runner (model initialised from `seed`, tricks applied) and its training loader, built in
    this process (no workers) from the same pipeline a run uses."""
    from mmengine.runner import Runner

    ctx = RunContext(recipe, seed, work / f"seed{seed}-{time.monotonic_ns()}", work / "dvclive", threads=1, progress=False)
    runner, cfg = build_runner(recipe, seed, ctx)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)  # built by runner.train() otherwise
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.update(num_workers=0, persistent_workers=False)
    return runner, Runner.build_dataloader(loader_cfg, seed=seed)


def batch(runner, loader, n: int | None = None):
    """One training batch as the network receives it: augmented, then normalised and padded by the data preprocessor."""
    data = next(iter(loader))
    if n is not None:
        data = {k: v[:n] for k, v in data.items()}
    return runner.model.data_preprocessor(data, training=True)


def drop_dropout(model) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout2d | torch.nn.Dropout):
            m.p = 0.0


def loss(model, inputs, samples):
    """The model's total training loss on a preprocessed batch."""
    total, _ = model.parse_losses(model.loss(inputs, samples))
    return total


def fit(model, inputs, samples, steps: int, lr: float) -> list[float]:
    """`steps` Adam steps in train mode on one batch; the loss before each."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        model.train()
        value = loss(model, inputs, samples)
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    return losses


def channel_problems(x: torch.Tensor) -> tuple[list[str], list[str]]:
    """Problems of a normalised NCHW batch (NaN/Inf, 0-255 range, constant channels) and a row per channel."""
    x = x.float()
    problems = []
    if not torch.isfinite(x).all():
        problems.append(f"{int((~torch.isfinite(x)).sum())} NaN/Inf values in the inputs")
    chans = x.transpose(0, 1).reshape(x.shape[1], -1)
    mean, std, lo, hi = chans.mean(1), chans.std(1), chans.min(1).values, chans.max(1).values
    if float(hi.max()) > 20 or float(lo.min()) < -20:
        problems.append(f"inputs range [{float(lo.min()):.1f}, {float(hi.max()):.1f}]: not normalised (check data_preprocessor mean/std)")
    if (std == 0).any():
        problems.append(f"constant channel(s) {(std == 0).nonzero().flatten().tolist()}")
    rows = [f"channel {i}: mean {float(mean[i]):.3f}, std {float(std[i]):.3f}, min {float(lo[i]):.3f}, max {float(hi[i]):.3f}"
            for i in range(len(mean))]
    return problems, rows


def determinism(build_runner, recipe, seed, work, steps: int = 3) -> Check:
    def losses(s):
        runner, loader = setup(build_runner, recipe, s, work)
        out, it = [], iter(loader)
        for _ in range(steps):
            log = runner.model.train_step(next(it), runner.optim_wrapper)
            out.append(float(log["loss"].detach()))
        return out

    a, b, c = losses(seed), losses(seed), losses(seed + 1)
    ok = a == b and a != c
    return Check("determinism", ok, "same seed, same losses; another seed, other losses" if ok else
                 "the same seed gave different losses" if a != b else "another seed gave the same losses: is the seed used?",
                 [f"seed {seed}: {[round(v, 5) for v in a]}", f"seed {seed + 1}: {[round(v, 5) for v in c]}"])


def throughput(build_runner, recipe, seed, work, steps: int = 4) -> Check:
    """Images/s of the loader alone (this process, profiled) and of full training steps, the loader's share,
    and a batch-size scan (powers of two up to twice the recipe's batch, or until one does not fit)."""
    runner, loader = setup(build_runner, recipe, seed, work)
    it = _endless(loader)
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(steps)]
    t_data = time.perf_counter() - t0
    more = []
    profile = profile_top(lambda: more.extend(next(it) for _ in range(2)))  # apart from the timing: cProfile slows Python
    t0 = time.perf_counter()
    for data in batches:
        runner.model.train_step(data, runner.optim_wrapper)
    t_step = time.perf_counter() - t0
    n = sum(len(d["inputs"]) for d in batches)
    workers = runner.cfg.train_dataloader.num_workers
    share = t_data / (t_data + t_step)
    ok = share / max(1, workers) < 0.5
    recipe_bs = len(batches[0]["inputs"])
    sizes = [2 ** k for k in range(8) if 2 ** k <= 2 * recipe_bs]
    pool = {k: [x for d in batches + more for x in d[k]] for k in batches[0]}
    while len(pool["inputs"]) < sizes[-1]:
        d = next(it)
        for k in pool:
            pool[k].extend(d[k])
    scan = batch_size_scan(lambda bs: runner.model.train_step({k: v[:bs] for k, v in pool.items()}, runner.optim_wrapper), sizes)
    return Check("throughput", ok, f"loader {n / t_data:.1f} images/s in one process, training steps {n / t_step:.1f} images/s; "
                 f"one loader process would be {100 * share:.0f}% of the time, the recipe runs {workers}"
                 + ("" if ok else ": input-bound, raise schedule.num_workers"), [scan, profile])


def _endless(loader):
    """The loader's batches, epoch after epoch (a tiny set may hold fewer batches than a check needs)."""
    while True:
        yield from loader


def render_images(recipe, names: list[str], titles: list[str], out: Path) -> Path:
    """The prepared dataset's images named `names` (file names) as a titled grid: `reprozoo errors`."""
    from PIL import Image

    from ..checks import save_grid
    from ..datasets_store import ensure_prepared

    root = ensure_prepared(recipe.family, recipe.config["dataset"]["name"])
    found = {}
    for p in root.rglob("*"):
        if p.name in names and p.name not in found and "annotation" not in str(p.relative_to(root)):
            found[p.name] = p

    def draw(path):
        return lambda ax: ax.imshow(Image.open(path).convert("RGB"))

    cells = [(f"{name}\n{title}", draw(found[name]) if name in found else None) for name, title in zip(names, titles)]
    return save_grid(out, cells, cols=4, cell=(2.6, 2.5))
