"""A/B of the seed-batched MNIST-1D CNN step in one process: `stacked_ops.py` as of a git revision (A)
against the working tree's (B), alternating rounds of 40 steps so that this VM's drifting speed hits both
alike; five stacked networks, Adam, one thread, deterministic algorithms. Also says whether A and B end
with bitwise the same weights (they should, for a change meant to be bitwise neutral).

    uv run python benchmarks/stacked_conv_ab.py --old 85698fc            # a batch shared by all seeds
    uv run python benchmarks/stacked_conv_ab.py --old 85698fc --own      # each seed its own (mixup arms)
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from reprozoo.families.classification import stacked_ops as new_ops
from reprozoo.families.classification.batched import _optimizer
from reprozoo.families.classification.models import MODELS

REL = "src/reprozoo/families/classification/stacked_ops.py"


def _ops_at(rev: str, tmp: Path):
    src = subprocess.run(["git", "show", f"{rev}:{REL}"], capture_output=True, text=True, check=True).stdout
    (tmp / "old_ops.py").write_text(src)
    spec = importlib.util.spec_from_file_location("old_ops", tmp / "old_ops.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Conv(nn.Module):
    def __init__(self, conv: nn.Conv1d, ops):
        super().__init__()
        self.ops, self.stride, self.padding = ops, conv.stride[0], conv.padding[0]
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x):
        return self.ops.Conv1dIm2col.apply(x, self.weight, self.bias, self.stride, self.padding)[0]


def _stepper(ops, own: bool, foreach: bool, data):
    nets = []
    for s in range(5):
        torch.manual_seed(s)
        net = MODELS.build({"name": "mnist1d_cnn"})
        for name, child in list(net.named_children()):
            if isinstance(child, nn.Conv1d):
                setattr(net, name, _Conv(child, ops))
        nets.append(net)
    params, buffers = stack_module_state(nets)
    for p in params.values():
        p.requires_grad_(True)
    base = nets[0].to("meta")
    fwd = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, 0 if own else None))
    opt = torch.optim.Adam(list(params.values()), lr=1e-2, foreach=foreach)
    xs, ys = data
    state = {"i": 0}

    def step():
        i = state["i"] % 40
        state["i"] += 1
        x, y = xs[i * 100:(i + 1) * 100], ys[i * 100:(i + 1) * 100]
        if own:  # each seed its own batch, as the mixup arms
            x = torch.stack([x.roll(j, 0) for j in range(5)])
            y = torch.stack([y.roll(j, 0) for j in range(5)]).reshape(-1)
        else:
            y = y.repeat(5)
        loss = F.cross_entropy(fwd(params, buffers, x).reshape(500, 10), y, reduction="none").view(5, 100).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    return step, params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="git revision whose stacked_ops.py is A")
    p.add_argument("--own", action="store_true", help="each seed its own batch")
    p.add_argument("--rounds", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(4000, 40, generator=g), torch.randint(0, 10, (4000,), generator=g)
    # B's optimizer as the seed-batched engine builds it now; A's as before (a loop over tensors)
    b_foreach = _optimizer({"name": "adam", "lr": 0.01, "weight_decay": 0.0, "betas": [0.9, 0.999]},
                           {"w": torch.zeros(1, requires_grad=True)}, False).defaults["foreach"]
    with tempfile.TemporaryDirectory() as tmp:
        step_a, pa = _stepper(_ops_at(a.old, Path(tmp)), a.own, False, data)
    step_b, pb = _stepper(new_ops, a.own, bool(b_foreach), data)
    ta, tb = [], []
    for _ in range(a.rounds):
        for step, acc in ((step_a, ta), (step_b, tb)):
            t = time.perf_counter()
            for _ in range(40):
                step()
            acc.append((time.perf_counter() - t) / 40 * 1e3)
    ratios = [b / x for x, b in zip(ta[1:], tb[1:])]  # the first round warms up
    same = all(torch.equal(x, y) for x, y in zip(pa.values(), pb.values()))
    print(f"mnist1d_cnn 5-seed step{' (own batches)' if a.own else ''}: A ({a.old}) {statistics.median(ta[1:]):.2f} ms, "
          f"B (working tree) {statistics.median(tb[1:]):.2f} ms; B/A per round median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}); weights bitwise equal after {40 * a.rounds} steps: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
