"""Training-step cost of reprozoo (MMEngine Runner, hooks, loader) against a bare PyTorch loop.

Same model, batch size, optimizer and thread count; both skip their first 200 steps (warm-up).
Evaluation and checkpoints are pushed past the end so only training steps are timed.

    uv run python benchmarks/step_overhead.py mnist1d_mlp --steps 3000
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from mmengine.hooks import Hook

from reprozoo.families.classification.engine import build_runner
from reprozoo.families.classification.models import MODELS
from reprozoo.recipes import load_recipe
from reprozoo.runs import RunContext

WARMUP = 200


class _Clock(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter == WARMUP:
            self.start = time.perf_counter()


def bare(model, batch: int, steps: int, lr: float) -> float:
    opt = torch.optim.Adam(model.parameters(), lr)
    x, y = torch.randn(4000, 40), torch.randint(0, 10, (4000,))
    for i in range(steps + WARMUP):
        if i == WARMUP:
            t = time.perf_counter()
        b = (i * batch) % len(x)
        loss = torch.nn.functional.cross_entropy(model(x[b:b + batch]), y[b:b + batch])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return (time.perf_counter() - t) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe")
    p.add_argument("--steps", type=int, default=3000)
    args = p.parse_args()
    r = load_recipe(args.recipe)
    cfg = {**r.config, "schedule": {**r.config["schedule"], "iters": args.steps + WARMUP},
           "eval": {**r.config["eval"], "interval": 10**9}, "checkpoint_interval": 10**9}
    r = dataclasses.replace(r, config=cfg)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t_bare = bare(MODELS.build(cfg["model"]), cfg["schedule"]["batch_size"], args.steps, cfg["optim"]["lr"])
    with tempfile.TemporaryDirectory() as tmp:
        runner = build_runner(r, 0, RunContext(r, 0, Path(tmp), Path(tmp) / "dvclive", 1, progress=False))
        clock = _Clock()
        runner.register_hook(clock)
        runner.train()
        t_ours = (time.perf_counter() - clock.start) / args.steps
    print(f"{args.recipe}: bare loop {t_bare * 1e3:.2f} ms/step, reprozoo {t_ours * 1e3:.2f} ms/step, "
          f"throughput ratio reprozoo/bare = {t_bare / t_ours:.2f}")


if __name__ == "__main__":
    main()
