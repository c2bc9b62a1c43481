"""Training-step cost of reprozoo (MMEngine Runner, hooks, loader; and for recipes with `speed.seed_block`
the seed-batched engine, per seed) against a bare PyTorch loop of one model.

Same model, data (the recipe's prepared training set, fetched and augmented by the same dataset
class), normalisation, optimizer, batch size and thread count; both skip their first `--warmup`
steps. Evaluation and checkpoints are pushed past the end, and the Runner's clock stops at its last
training iteration (its closing evaluation and predictions are not timed). Each loop runs `--repeats`
times, interleaved, and the ratios are medians over the repeats: on this shared virtual machine one
loop's speed drifts by 10-30% within a minute.

    uv run python benchmarks/step_overhead.py mnist1d_mlp --steps 3000  (seed-batched, then one seed on MMEngine)
    REPROZOO_DATA=../shared/data uv run python benchmarks/step_overhead.py cifar10_resnet20_akamaster --steps 100 --warmup 10
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
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

class _Paired(Hook):
    """Times the Runner's training iterations after the first `warmup` and, after each one, one step of
    the bare loop: the two alternate step by step, so the machine's drifting speed hits both alike.
    It runs last among the iteration's hooks; the Runner's interval is from the end of the previous bare
    step to here (data, forward, backward, guard, optimizer, every other hook). The run's closing
    evaluation and predictions come after the last iteration and are not timed."""

    priority = "LOWEST"

    def __init__(self, warmup: int, bare_step):
        self.warmup, self.bare_step = warmup, bare_step
        self.ours = self.bare = 0.0
        self.steps, self.last = 0, None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        now = time.perf_counter()
        timed = batch_idx + 1 > self.warmup
        if timed:
            self.ours += now - self.last
            self.steps += 1
        self.bare_step()
        done = time.perf_counter()
        if timed:
            self.bare += done - now
        self.last = done


def bare_stepper(recipe):
    """One step of a plain loop per call: index the batch, normalise, forward, backward, step."""
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
    i = 0

    def step():
        nonlocal i
        data = train[[(i * batch + j) % n for j in range(batch)]]  # always a full batch, like the runner's sampler
        x = data["inputs"] if norm is None else (data["inputs"].float() - mean) / std
        loss = torch.nn.functional.cross_entropy(model(x), data["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
        i += 1
    return step


def bare(recipe, steps: int, warmup: int) -> float:
    """Seconds per step of the plain loop alone."""
    step = bare_stepper(recipe)
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
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


def paired(r, warmup: int, steps: int) -> tuple[float, float]:
    """Seconds per training iteration of the one-seed MMEngine Runner (its hooks, loader and guard) and
    of the bare loop, measured alternately within one run (deterministic algorithms on in both)."""
    with tempfile.TemporaryDirectory() as tmp:
        runner = build_runner(r, 0, RunContext(r, 0, Path(tmp), Path(tmp) / "dvclive", 1, progress=False))
        clock = _Paired(warmup, bare_stepper(r))
        runner.register_hook(clock)
        runner.train()
        assert clock.steps == steps, (clock.steps, steps)
        return clock.ours / steps, clock.bare / steps


def _without(parts: list[str]) -> None:
    """Switch parts of the one-seed Runner's step off, to measure what they cost (not for real runs)."""
    from mmengine.optim import OptimWrapper

    from reprozoo.families import openmmlab

    if "grad-log" in parts:
        openmmlab.GradientHealthHook.after_train_iter = lambda self, *a, **k: None
    if "guard" in parts:
        openmmlab.GuardedOptimWrapper.update_params = OptimWrapper.update_params
        openmmlab.GuardedOptimWrapper.step = OptimWrapper.step  # no norm, so no grad_norm row either
    if "hooks" in parts:  # per iteration, only MMEngine's RuntimeInfoHook (the step needs its iteration count) and the clock
        from mmengine.runner import Runner

        call = Runner.call_hook

        def call_hook(self, fn_name, **kwargs):
            if fn_name not in ("before_train_iter", "after_train_iter"):
                return call(self, fn_name, **kwargs)
            for hook in self._hooks:
                if type(hook).__name__ in ("RuntimeInfoHook", "_Paired"):
                    getattr(hook, fn_name)(self, **kwargs)

        Runner.call_hook = call_hook


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3, help="measure everything this many times; ratios are medians over repeats")
    p.add_argument("--without", choices=["grad-log", "guard", "hooks"], action="append", default=[],
                   help="what a part of the Runner's step costs: grad-log, no per-step grad_norm row in the curves; "
                        "guard, neither the finiteness checks and gradient norm nor that row; hooks, no per-iteration "
                        "hook but MMEngine's RuntimeInfoHook (repeatable)")
    args = p.parse_args()
    _without(args.without)
    if args.warmup < 1:
        p.error("--warmup must be at least 1")
    r = load_recipe(args.recipe)
    cfg = {**r.config, "schedule": {**r.config["schedule"], "iters": args.steps + args.warmup, "lr_schedule": "constant",
                                    "warmup_iters": 0},
           "eval": {**r.config["eval"], "interval": 10**9}, "checkpoint_interval": 10**9}
    r = dataclasses.replace(r, config=cfg)
    one_seed = dataclasses.replace(r, config={**cfg, "speed": {**cfg["speed"], "seed_block": 1}})
    block = cfg["speed"]["seed_block"]
    times = {"bare": [], "bare_det": [], "batched": [], "mmengine": [], "bare_paired": []}
    for rep in range(args.repeats):
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(1)
        torch.manual_seed(0)
        times["bare"].append(bare(r, args.steps, args.warmup))
        # reprozoo runs with deterministic algorithms on; time the bare loop that way too, to separate
        # the framework's overhead from the price of determinism
        seed_everything(0, deterministic=True, threads=1)
        times["bare_det"].append(bare(r, args.steps, args.warmup))
        if block > 1:
            times["batched"].append(batched_per_seed(r, args.steps, args.warmup))
        ours, theirs = paired(one_seed, args.warmup, args.steps)
        times["mmengine"].append(ours)
        times["bare_paired"].append(theirs)
        print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in times.items() if v), flush=True)

    def ratio(num: str, den: str) -> str:  # throughput of `den` relative to `num`, median over repeats (range)
        rs = sorted(a / b for a, b in zip(times[num], times[den]))
        return f"{statistics.median(rs):.2f}" + (f" ({rs[0]:.2f}-{rs[-1]:.2f})" if len(rs) > 1 else "")

    ms = {k: statistics.median(v) * 1e3 for k, v in times.items() if v}
    batch = cfg["schedule"]["batch_size"]
    print(f"{args.recipe}, {args.steps} steps after {args.warmup}, medians of {args.repeats} repeats"
          + (f", the Runner without {' and '.join(args.without)}" if args.without else "") + ":")
    if block > 1:
        print(f"  seed-batched engine ({block} seeds) {ms['batched']:.2f} ms/step per seed; throughput ratio "
              f"batched/bare-deterministic = {ratio('bare_det', 'batched')}, batched/bare = {ratio('bare', 'batched')}")
    print(f"  bare loop {ms['bare']:.2f} ms/step ({batch / ms['bare'] * 1e3:.0f} samples/s); bare loop with deterministic "
          f"algorithms {ms['bare_det']:.2f} ms/step")
    print(f"  one-seed MMEngine engine {ms['mmengine']:.2f} ms/step, the bare deterministic loop alternating with it "
          f"{ms['bare_paired']:.2f} ms/step: throughput ratio MMEngine/bare-deterministic = {ratio('bare_paired', 'mmengine')}")


if __name__ == "__main__":
    main()
