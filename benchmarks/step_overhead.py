"""Training-step cost of reprozoo (MMEngine Runner, hooks, loader) against a bare PyTorch loop.

Same model, data (the recipe's prepared training set, fetched and augmented by the same dataset
class), normalisation, optimizer, batch size and thread count; both skip their first `--warmup`
steps. Evaluation and checkpoints are pushed past the end so only training steps are timed.

    uv run python benchmarks/step_overhead.py mnist1d_mlp --steps 3000
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
    with tempfile.TemporaryDirectory() as tmp:
        runner = build_runner(r, 0, RunContext(r, 0, Path(tmp), Path(tmp) / "dvclive", 1, progress=False))
        clock = _Clock(args.warmup)
        runner.register_hook(clock)
        runner.train()
        t_ours = (time.perf_counter() - clock.start) / args.steps
    batch = cfg["schedule"]["batch_size"]
    print(f"{args.recipe}: bare loop {t_fast * 1e3:.2f} ms/step ({batch / t_fast:.0f} samples/s); bare loop with "
          f"deterministic algorithms {t_bare * 1e3:.2f} ms/step ({batch / t_bare:.0f} samples/s); reprozoo "
          f"{t_ours * 1e3:.2f} ms/step ({batch / t_ours:.0f} samples/s); throughput ratio reprozoo/bare-deterministic = "
          f"{t_bare / t_ours:.2f}, reprozoo/bare = {t_fast / t_ours:.2f}")


if __name__ == "__main__":
    main()
