"""Training-step cost of reprozoo (MMEngine Runner, hooks, loader; and for recipes with `speed.seed_block`
the seed-batched engine, per seed) against a bare PyTorch loop of one model.

Same model, data (the recipe's prepared training set, fetched and augmented by the same dataset
class), normalisation, optimizer, batch size and thread count; both skip their first `--warmup`
steps. Evaluation and checkpoints are pushed past the end so only training steps are timed.

    uv run python benchmarks/step_overhead.py mnist1d_mlp --steps 3000  (seed-batched, then one seed on MMEngine)
    REPROZOO_DATA=../shared/data uv run python benchmarks/step_overhead.py cifar10_resnet20_akamaster --steps 100 --warmup 10
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from mmengine.hooks import Hook

from reprozoo.datasets_store import ensure_prepared
from reprozoo.families.classification.datasets import DATASETS
from reprozoo.families.classification.engine import _optimizer, build_runner
from reprozoo.families.classification.models import MODELS
from reprozoo.recipes import load_recipe
from reprozoo.runs import RunContext
from reprozoo.seeding import seed_everything

class _Clock(Hook):
    def __init__(self, warmup: int):
        self.warmup = warmup

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == self.warmup:
            self.start = time.perf_counter()


def bare(recipe, steps: int, warmup: int) -> float:
    """A plain loop: index the batch, normalise, forward, backward, step."""
    cfg = recipe.config
    model = MODELS.build(cfg["model"])
    o = _optimizer(cfg["optim"])
    kind = getattr(torch.optim, o.pop("type"))
    opt = kind(model.parameters(), **o)
    ds = DATASETS.build(cfg["dataset"])
    train = ds.load(ensure_prepared(recipe.family, cfg["dataset"]["name"]), "train")
    norm = getattr(ds, "normalize", None)
    if norm is not None:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in norm)
    batch, n = cfg["schedule"]["batch_size"], len(train)
    model.train()
    for i in range(steps + warmup):
        if i == warmup:
            t = time.perf_counter()
        data = train[[(i * batch + j) % n for j in range(batch)]]  # always a full batch, like the runner's sampler
        x = data["inputs"] if norm is None else (data["inputs"].float() - mean) / std
        loss = torch.nn.functional.cross_entropy(model(x), data["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return (time.perf_counter() - t) / steps


def batched_per_seed(recipe, steps: int, warmup: int) -> float:
    """Seconds per step and seed of the seed-batched engine (guard, clipping, curves included): two
    trainings of one block, `warmup` and `warmup + steps` steps; the difference is `steps` steps."""
    from reprozoo.families.classification.batched import train

    n = recipe.config["speed"]["seed_block"]
    walls = []
    for iters in (warmup, warmup + steps):
        cfg = {**recipe.config, "schedule": {**recipe.config["schedule"], "iters": iters}}
        r = dataclasses.replace(recipe, config=cfg)
        with tempfile.TemporaryDirectory() as tmp:
            ctxs = [RunContext(r, s, Path(tmp), Path(tmp) / f"seed{s}" / "dvclive", 1, progress=False) for s in range(n)]
            walls.append(train(r, list(range(n)), ctxs, Path(tmp), progress=False)[0]["train_seconds"])
    return (walls[1] - walls[0]) / steps / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=200)
    args = p.parse_args()
    r = load_recipe(args.recipe)
    cfg = {**r.config, "schedule": {**r.config["schedule"], "iters": args.steps + args.warmup, "lr_schedule": "constant",
                                    "warmup_iters": 0},
           "eval": {**r.config["eval"], "interval": 10**9}, "checkpoint_interval": 10**9}
    r = dataclasses.replace(r, config=cfg)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t_fast = bare(r, args.steps, args.warmup)
    # reprozoo runs with deterministic algorithms on; time the bare loop that way too, to separate
    # the framework's overhead from the price of determinism
    seed_everything(0, deterministic=True, threads=1)
    t_bare = bare(r, args.steps, args.warmup)
    if cfg["speed"]["seed_block"] > 1:
        t_block = batched_per_seed(r, args.steps, args.warmup)
        r = dataclasses.replace(r, config={**cfg, "speed": {**cfg["speed"], "seed_block": 1}})
    with tempfile.TemporaryDirectory() as tmp:
        runner = build_runner(r, 0, RunContext(r, 0, Path(tmp), Path(tmp) / "dvclive", 1, progress=False))
        clock = _Clock(args.warmup)
        runner.register_hook(clock)
        runner.train()
        t_ours = (time.perf_counter() - clock.start) / args.steps
    batch = cfg["schedule"]["batch_size"]
    if cfg["speed"]["seed_block"] > 1:
        print(f"{args.recipe}: seed-batched engine ({cfg['speed']['seed_block']} seeds) {t_block * 1e3:.2f} ms/step per seed; "
              f"throughput ratio batched/bare-deterministic = {t_bare / t_block:.2f}, batched/bare = {t_fast / t_block:.2f}")
    print(f"{args.recipe}: bare loop {t_fast * 1e3:.2f} ms/step ({batch / t_fast:.0f} samples/s); bare loop with "
          f"deterministic algorithms {t_bare * 1e3:.2f} ms/step ({batch / t_bare:.0f} samples/s); one-seed MMEngine engine "
          f"{t_ours * 1e3:.2f} ms/step ({batch / t_ours:.0f} samples/s); throughput ratio MMEngine/bare-deterministic = "
          f"{t_bare / t_ours:.2f}, MMEngine/bare = {t_fast / t_ours:.2f}")


if __name__ == "__main__":
    main()
