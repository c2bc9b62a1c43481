"""A seed-batched training step replayed from one trace (`batched._traced`, make_fx) against the same step
run eagerly (vmap, functional_call and autograd each step), in one process: the two alternate in rounds of
40 steps on their own copies of the same five networks, so this VM's drifting speed hits both alike; the
ratio is the median round's. Afterwards the two copies' weights must be bitwise equal.

    uv run python benchmarks/traced_step.py --models mnist1d_cnn mnist1d_mlp mnist1d_linear mnist1d_gru
    uv run python benchmarks/traced_step.py --models mnist1d_cnn --own     # each seed its own batch (mixup arms)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from reprozoo.families.classification.batched import _traced, vmappable
from reprozoo.families.classification.models import MODELS


def stepper(model: str, seeds: int, traced: bool, own: bool, data):
    """One Adam step of `seeds` stacked networks per call, as batched.train runs it (without its guard and curves)."""
    nets = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        nets.append(vmappable(MODELS.build({"name": model})))
    params, buffers = stack_module_state(nets)
    for p in params.values():
        p.requires_grad_(True)
    base, names, plist = nets[0].to("meta"), list(params), list(params.values())
    forward = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, 0 if own else None))
    opt = torch.optim.Adam(plist, lr=1e-3, foreach=True)
    xs, ys = data

    def joint(weights, x, y):
        with torch.enable_grad():
            logits = forward(dict(zip(names, weights)), buffers, x)
            losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(seeds, -1).mean(1)
            return losses.detach(), torch.autograd.grad(losses.sum(), weights)

    fn, i = None, 0

    def step():
        nonlocal fn, i
        x, y = xs[i % len(xs)], ys[i % len(ys)]
        if fn is None:
            fn = _traced(joint, plist, x, y) if traced else joint
        with torch.no_grad():
            _, grads = fn(plist, x, y)
        for p, g in zip(plist, grads):
            p.grad = g
        opt.step()
        i += 1

    return step, plist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mnist1d_cnn", "mnist1d_mlp", "mnist1d_linear", "mnist1d_gru"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--own", action="store_true", help="each seed its own batch, as with mixup")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(0)
    shape = (args.seeds, 100, 40) if args.own else (100, 40)
    data = ([torch.randn(*shape, generator=g) for _ in range(40)],
            [torch.randint(0, 10, (args.seeds, 100), generator=g) for _ in range(40)])
    for model in args.models:
        runs = {kind: stepper(model, args.seeds, kind == "traced", args.own, data) for kind in ("eager", "traced")}
        times: dict = {kind: [] for kind in runs}
        for rnd in range(args.rounds + 1):
            for kind, (step, _) in runs.items():
                t = time.perf_counter()
                for _ in range(40):
                    step()
                if rnd:  # the first round warms both up (and traces)
                    times[kind].append((time.perf_counter() - t) / 40 * 1e3)
        eager, traced = (statistics.median(times[k]) for k in ("eager", "traced"))
        ratios = sorted(t / e for t, e in zip(times["traced"], times["eager"]))
        same = all(torch.equal(a, b) for a, b in zip(runs["eager"][1], runs["traced"][1]))
        print(f"{model:<15} eager {eager:6.2f} ms, traced {traced:6.2f} ms per {args.seeds}-seed step; traced/eager "
              f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f}); weights bitwise equal: {same}", flush=True)


if __name__ == "__main__":
    main()
