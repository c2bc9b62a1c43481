"""Time one training step of five stacked MNIST-1D networks (vmap, a shared batch of 100, Adam, one thread)
with PyTorch's own layers under vmap (grouped oneDNN convolution; `nn.GRU` unrolled into per-step tensor
operations) against reprozoo's stacked layers (`Conv1dIm2col`, `GRURecurrence`), alone or with
`--concurrent N` copies of the same measurement running at once (what `reprozoo repro --jobs N` does).

    uv run python benchmarks/stacked_layers.py --models mnist1d_cnn mnist1d_gru --steps 200
    uv run python benchmarks/stacked_layers.py --models mnist1d_cnn --steps 200 --concurrent 2
    uv run python benchmarks/stacked_layers.py --models mnist1d_cnn --seeds 10   # a block of ten
    uv run python benchmarks/stacked_layers.py --models mnist1d_cnn --profile    # where a step's time goes
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _unrolled_gru():
    """The per-step GRU that batched.py used before GRURecurrence: autograd records every step."""
    import torch
    from torch import nn

    class Unrolled(nn.Module):
        def __init__(self, gru):
            super().__init__()
            self.hidden_size, self.bidirectional = gru.hidden_size, gru.bidirectional
            for name, p in gru.named_parameters():
                self.register_parameter(name, p)

        def forward(self, x):
            sfx = ("_l0", "_l0_reverse") if self.bidirectional else ("_l0",)
            w_ih = torch.stack([getattr(self, "weight_ih" + s) for s in sfx])
            w_hh = torch.stack([getattr(self, "weight_hh" + s) for s in sfx]).transpose(1, 2)
            b_ih = torch.stack([getattr(self, "bias_ih" + s) for s in sfx]).unsqueeze(1)
            b_hh = torch.stack([getattr(self, "bias_hh" + s) for s in sfx]).unsqueeze(1)
            seqs = torch.stack([x, x.flip(1)][:len(sfx)])
            gi = torch.matmul(seqs, w_ih.transpose(1, 2).unsqueeze(1)) + b_ih.unsqueeze(1)
            h = torch.zeros(len(sfx), x.shape[0], self.hidden_size)
            out = []
            for t in range(x.shape[1]):
                gh = torch.matmul(h, w_hh) + b_hh
                i_r, i_z, i_n = gi[:, :, t].chunk(3, -1)
                h_r, h_z, h_n = gh.chunk(3, -1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                h = (1 - z) * n + z * h
                out.append(h)
            out = torch.stack(out, 2)
            return (torch.cat([out[0], out[1].flip(1)], -1) if self.bidirectional else out[0]), None

    return Unrolled


def step_ms(model: str, layers: str, steps: int, warmup: int = 20, seeds: int = 5, profile: bool = False) -> float:
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.func import functional_call, stack_module_state, vmap

    from reprozoo.families.classification.batched import vmappable
    from reprozoo.families.classification.models import MODELS

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    nets = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = MODELS.build({"name": model})
        if layers == "stacked":
            vmappable(net)
        elif isinstance(getattr(net, "gru", None), nn.GRU):
            net.gru = _unrolled_gru()(net.gru)
        nets.append(net)
    params, buffers = stack_module_state(nets)
    for p in params.values():
        p.requires_grad_(True)
    base = nets[0].to("meta")
    forward = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))
    opt = torch.optim.Adam(list(params.values()), lr=1e-3, foreach=False)
    x, y = torch.randn(100, 40), torch.randint(0, 10, (100,))

    def step():
        logits = forward(params, buffers, x)
        loss = F.cross_entropy(logits.reshape(seeds * 100, 10), y.repeat(seeds), reduction="none").view(seeds, 100).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    for _ in range(warmup):
        step()
    if profile:  # torch.profiler's operator table, by own CPU time, to stderr
        from torch.profiler import profile as torch_profile

        with torch_profile() as prof:
            for _ in range(steps):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mnist1d_cnn", "mnist1d_gru"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=1, help="copies of the measurement at once")
    ap.add_argument("--seeds", type=int, default=5, help="networks stacked in one step (a seed block)")
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators (stacked layers)")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "LAYERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(step_ms(args.one[0], args.one[1], args.steps, seeds=args.seeds,
                                 profile=args.profile and args.one[1] == "stacked")))
        return
    for model in args.models:
        for layers in ("torch", "stacked"):
            cmd = [sys.executable, __file__, "--one", model, layers, "--steps", str(args.steps), "--seeds", str(args.seeds)]
            procs = [subprocess.Popen(cmd + (["--profile"] if args.profile else []), stdout=subprocess.PIPE, text=True)
                     for _ in range(args.concurrent)]
            times = [json.loads(p.communicate()[0]) for p in procs]
            print(f"{model:<14} {layers:<8} x{args.concurrent}: " + ", ".join(f"{t:.2f}" for t in times)
                  + f" ms per {args.seeds}-seed step", flush=True)


if __name__ == "__main__":
    main()
