"""Seed-batched training: the seeds of one block trained together as one stacked model.

For small networks a training step costs less than the Python around it, so training the seeds of a
recipe one process at a time mostly pays overhead. Here each seed's network is built exactly as the
MMEngine engine builds it (seeded, then constructed: the same initial weights), the networks' tensors
are stacked (`torch.func.stack_module_state`) and one `torch.func.vmap` of the network runs all of
them per step. The seeds never mix: every seed has its own loss, gradients, gradient-norm guard,
clipping, optimizer state (Adam/SGD act elementwise, so one optimizer over stacked tensors is one
optimizer per seed), EMA and random stream for augmentations, and its own curves.

Blocks are fixed (`speed.seed_block: 5` trains seeds 0-4, 5-9, ...) and always trained whole, so a
seed's bits on a machine depend only on its block, never on which other seeds a pipeline asks for.
`runs.execute` keeps each block's results under `.reprozoo/work/` until every seed's stage has
taken its own; this module only trains.

`nn.GRU` has no vmap rule (`aten::gru.input`), so GRUs are run through `UnrolledGRU`, the same
equations and the same parameter names, one time step at a time.

A step's forward and backward are traced once (`make_fx`) and replayed as the recorded aten operations:
the same kernels on the same shapes give the same bits, and the Python of vmap, functional_call and
autograd, about a quarter of a 5-seed CNN step (benchmarks/traced_step.py), is paid once per block.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ...errors import ConfigError, NonFiniteStep
from ...predictions import write_labels
from ...seeding import seed_everything
from . import OPTIMIZERS, tricks
from .datasets import DATASETS, load_splits
from .models import MODELS
from .stacked_ops import Conv1dIm2col, Conv2dPerSeed, GRURecurrence

# tricks this engine implements; the others (image policies, zero-init of BatchNorm) need the MMEngine engine
TRICKS = {"cosine", "warmup", "longer_schedule", "label_smoothing", "mixup", "cutmix", "ema", "clip_grad",
          "no_bias_decay", "hflip_tta", "cutout", "random_erasing"}
# modules whose state or randomness is shared across the batch: not per seed under vmap
UNBATCHED = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
CHECKPOINT = "block.pth"
TRACE = True  # replay each block's step from one trace (`_traced`); False runs it eagerly, with the same bits


class UnrolledGRU(nn.Module):
    """`nn.GRU` (one layer, batch first, zero initial state) as the input projection plus
    `GRURecurrence`, which vmap can batch. It holds the GRU's own parameters under their own names, so a
    state dict moves between the two unchanged; both directions advance in the same step (stacked)."""

    def __init__(self, gru: nn.GRU):
        super().__init__()
        if gru.num_layers != 1 or not gru.batch_first or gru.proj_size or not gru.bias:
            raise ValueError("UnrolledGRU covers one-layer, batch-first GRUs with biases")
        self.hidden_size, self.bidirectional = gru.hidden_size, gru.bidirectional
        for name, p in gru.named_parameters():
            self.register_parameter(name, p)

    def forward(self, x):
        suffixes = ("_l0", "_l0_reverse") if self.bidirectional else ("_l0",)
        w_ih = torch.stack([getattr(self, "weight_ih" + s) for s in suffixes])  # (D, 3H, I)
        w_hh = torch.stack([getattr(self, "weight_hh" + s) for s in suffixes])  # (D, 3H, H)
        b_ih = torch.stack([getattr(self, "bias_ih" + s) for s in suffixes]).unsqueeze(1)  # (D, 1, 3H)
        b_hh = torch.stack([getattr(self, "bias_hh" + s) for s in suffixes])  # (D, 3H)
        seqs = torch.stack([x, x.flip(1)][:len(suffixes)])  # (D, B, T, I): the reverse direction reads backwards
        gi = torch.matmul(seqs, w_ih.transpose(1, 2).unsqueeze(1)) + b_ih.unsqueeze(1)  # (D, B, T, 3H), all steps at once
        out = GRURecurrence.apply(gi, w_hh, b_hh)[0]  # (D, B, T, H)
        if self.bidirectional:
            out = torch.cat([out[0], out[1].flip(1)], -1)
        else:
            out = out[0]
        return out, None


class Im2colConv1d(nn.Module):
    """`nn.Conv1d` (zero padding, no dilation or groups) through `Conv1dIm2col`, same parameters and names."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        self.stride, self.padding = conv.stride[0], conv.padding[0]
        self.weight, self.bias = conv.weight, conv.bias

    def forward(self, x):
        return Conv1dIm2col.apply(x, self.weight, self.bias, self.stride, self.padding)[0]


def _im2col_ok(conv: nn.Conv1d) -> bool:
    return (conv.groups == 1 and conv.dilation == (1,) and conv.bias is not None and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple))


def _per_seed(conv: nn.Conv2d):
    """`conv._conv_forward` (which nn.Conv2d and its subclasses call with the weight they use) through
    `Conv2dPerSeed`: under vmap one convolution per seed instead of one grouped convolution."""
    def conv_forward(x, weight, bias):
        return Conv2dPerSeed.apply(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return conv_forward


def vmappable(net: nn.Module) -> nn.Module:
    """`net` with every nn.GRU replaced by an UnrolledGRU and every plain nn.Conv1d by an Im2colConv1d,
    holding the same parameters, and every zero-padded nn.Conv2d convolving per seed (`_per_seed`)."""
    for name, child in list(net.named_children()):
        if isinstance(child, nn.GRU):
            setattr(net, name, UnrolledGRU(child))
        elif isinstance(child, nn.Conv1d) and _im2col_ok(child):
            setattr(net, name, Im2colConv1d(child))
        elif isinstance(child, nn.Conv2d) and child.padding_mode == "zeros" and isinstance(child.padding, tuple):
            child._conv_forward = _per_seed(child)  # an instance attribute: the module keeps its class and names
        else:
            vmappable(child)
    return net


def check(config: dict, file) -> None:
    """Refuse, at load time, a recipe this engine cannot train seed-batched."""
    if config["speed"]["seed_block"] <= 1:
        return
    other = [t["name"] for t in config["tricks"] if t["name"] not in TRICKS]
    if other:
        raise ConfigError(file, "speed.seed_block", f"trick {other[0]!r} needs the one-seed engine (seed_block: 1); "
                                                    f"seed-batched runs take", sorted(TRICKS))
    if getattr(DATASETS.build(config["dataset"]), "augment", False):
        raise ConfigError(file, "speed.seed_block", f"dataset {config['dataset']['name']!r} augments its batches; "
                                                    "seed-batched runs need a dataset without augmentation (use 1)")
    for key in ("channels_last", "amp"):
        if config["speed"][key] == "on":
            raise ConfigError(file, "speed.seed_block", f"speed.{key}: on needs the one-seed engine (seed_block: 1)")
    try:
        net = MODELS.build(config["model"])
    except (TypeError, ValueError, RuntimeError):
        return  # the model's own check names the argument
    bad = next((type(m).__name__ for m in net.modules() if isinstance(m, UNBATCHED)), None)
    if bad:
        raise ConfigError(file, "speed.seed_block", f"model {config['model']['name']!r} has {bad}, whose statistics or "
                                                    "randomness vmap would share between seeds; use seed_block: 1")


# ---------------------------------------------------------------------------------------------- schedule

def lr_factor(s: dict, step: int) -> float:
    """The multiplier of the base learning rate at optimizer step `step` (0-based), as MMEngine's
    LinearLR warmup followed by MultiStepLR or CosineAnnealingLR (eta_min 0) computes it in closed form."""
    f = 1.0
    w = s["warmup_iters"]
    if w and step < w:
        f *= s["warmup_factor"] + (1.0 - s["warmup_factor"]) * step / (w - 1)  # full lr at step w-1 (w >= 2)
    if s["lr_schedule"] == "multistep":
        f *= s["gamma"] ** sum(step >= m for m in s["milestones"])
    elif s["lr_schedule"] == "cosine" and step >= w:
        f *= 0.5 * (1.0 + math.cos(math.pi * (step - w) / (s["iters"] - w)))
    return f


def _optimizer(o: dict, params: dict, no_bias_decay: bool):
    cls = getattr(torch.optim, OPTIMIZERS[o["name"]])
    # foreach: one kernel per operation over all tensors (Adam: the same bits as per tensor, checked on the default's runs)
    kwargs = dict(lr=o["lr"], weight_decay=o["weight_decay"], foreach=True)
    if o["name"] == "sgd":
        kwargs.update(momentum=o["momentum"], nesterov=o["nesterov"])
    else:
        kwargs.update(betas=tuple(o["betas"]))
    if not no_bias_decay:
        return cls(list(params.values()), **kwargs)
    # MMEngine's paramwise_cfg(norm_decay_mult=0, bias_decay_mult=0): biases and 1-D (norm) weights without decay
    decay = [p for n, p in params.items() if not (n.endswith("bias") or p.ndim <= 2)]
    rest = [p for n, p in params.items() if n.endswith("bias") or p.ndim <= 2]
    return cls([{"params": decay}, {"params": rest, "weight_decay": 0.0}], **kwargs)


# ---------------------------------------------------------------------------------------------- training

class _Curves:
    """Each seed's DVCLive curves (`dvclive/plots/metrics/<name>.tsv`). The per-step gradient norms are
    buffered and appended in DVCLive's own format at each eval: a DVCLive call per step and seed would
    cost as much as a step of the smallest models."""

    def __init__(self, ctxs: list, resumed: int):
        from dvclive import Live

        self.dirs = [Path(c.curves_dir) for c in ctxs]
        self.lives = [Live(dir=str(d), report=None, save_dvc_exp=False, dvcyaml=None, monitor_system=False,
                           resume=bool(resumed)) for d in self.dirs]
        self.steps: list[int] = []
        self.norms: list[torch.Tensor] = []

    def log(self, step: int, name: str, values) -> None:
        for live, v in zip(self.lives, values):
            live.step = step
            live.log_metric(name, float(v))

    def grad_norm(self, step: int, norms: torch.Tensor) -> None:
        self.steps.append(step)
        self.norms.append(norms)

    def flush(self) -> None:
        from ...frameworks.mmrunner import append_curve

        if not self.steps:
            return
        table = torch.stack(self.norms).tolist()  # (steps, seeds)
        for j, d in enumerate(self.dirs):
            append_curve(d, "grad_norm", [(st, row[j]) for st, row in zip(self.steps, table)])
        self.steps, self.norms = [], []

    def params(self, params: dict) -> None:
        for live in self.lives:
            live.log_params(params)

    def close(self) -> None:
        self.flush()
        for live in self.lives:
            live.end()


def _inputs(dataset, x: torch.Tensor) -> torch.Tensor:
    """The network's float input, normalised as `engine.Classifier.prepare` does (once, for the whole set)."""
    norm = getattr(dataset, "normalize", None)
    if norm is None:
        return x
    mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in norm)
    return (x.float() - mean) / std


def _loss(logits, targets, label_smoothing: float):
    """Per-seed mean cross-entropy: logits (S, B, C), targets (S, B) or soft (S, B, C)."""
    s, b, c = logits.shape
    t = targets.reshape(s * b, -1).squeeze(-1) if targets.ndim == 2 else targets.reshape(s * b, c)
    return F.cross_entropy(logits.reshape(s * b, c), t, label_smoothing=label_smoothing, reduction="none").view(s, b).mean(1)


def _traced(fn, *example):
    """`fn` recorded once as the aten operations it runs (`make_fx`, as AOTAutograd traces a joint forward
    and backward) and replayed as a flat program: the same kernels on the same shapes, hence the same bits,
    without the per-step Python of vmap, functional_call and autograd (about a quarter of a 5-seed CNN step).
    Shapes are fixed by the example, as a block's batches all have the same shape. A step the tracer refuses
    (a model that branches on a tensor's value) stays eager: `fn` itself."""
    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        return make_fx(fn)(*example)
    except RuntimeError:  # make_fx raises on reading a value out of a traced tensor, rather than bake a branch
        return fn


def _grad_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Each seed's global gradient norm, (S,)."""
    return torch.stack([g.pow(2).flatten(1).sum(1) for g in grads]).sum(0).sqrt()


def train(recipe, seeds: list[int], ctxs: list, work: Path, progress: bool = True) -> list[dict]:
    """Train the seeds of one block together; return each seed's final metrics ({split: {accuracy}})."""
    cfg = tricks.patch_recipe(recipe.config)
    s, e, o = cfg["schedule"], cfg["eval"], cfg["optim"]
    trick = {t["name"]: t for t in cfg["tricks"]}
    threads = ctxs[0].threads
    nets = []
    for seed in seeds:  # each network exactly as the one-seed engine builds it: seeded, then constructed
        seed_everything(seed, deterministic=True, threads=threads)
        nets.append(vmappable(MODELS.build(cfg["model"])))
    rng = [torch.Generator().manual_seed(seed).get_state() for seed in seeds]  # each seed's stream for augmentations
    dataset = DATASETS.build(cfg["dataset"])
    from ...datasets_store import ensure_prepared

    data_dir = ensure_prepared(recipe.family, cfg["dataset"]["name"])
    train_set, eval_set, held_out = load_splits(dataset, data_dir, e)
    for c in ctxs:
        if held_out:
            c.record["val_split"] = held_out
    x_train, y_train = _inputs(dataset, train_set.x), train_set.y
    x_eval = _inputs(dataset, eval_set.x)
    n, k = len(y_train), len(seeds)

    params, buffers = stack_module_state(nets)
    for p in params.values():
        p.requires_grad_(True)
    base = nets[0].to("meta")

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    forward_shared = vmap(one, in_dims=(0, 0, None))  # every seed sees the same batch
    forward_own = vmap(one, in_dims=(0, 0, 0))  # each seed its own (augmented) batch
    names, plist = list(params), list(params.values())

    optimizer = _optimizer(o, params, "no_bias_decay" in trick)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    ema = {name: p.detach().clone() for name, p in params.items()} if "ema" in trick else None
    label_smoothing = trick["label_smoothing"]["epsilon"] if "label_smoothing" in trick else 0.0
    mixup = trick["mixup"]["alpha"] if "mixup" in trick else 0.0
    cutmix = trick["cutmix"]["alpha"] if "cutmix" in trick else 0.0
    erasing = {kk: v for kk, v in trick["random_erasing"].items() if kk != "name"} if "random_erasing" in trick else None
    cut = {"size": trick["cutout"]["size"], "p": trick["cutout"]["p"]} if "cutout" in trick else None
    clip = trick["clip_grad"]["max_norm"] if "clip_grad" in trick else None
    augmented = bool(mixup or cutmix or erasing or cut)
    per_seed = s["shuffle"]  # then each seed has its own batches
    forward = forward_own if augmented or per_seed else forward_shared

    def losses_and_grads(weights: list, x, targets):
        """Each seed's loss (S,) and the gradients of the stacked weights: seeds share no weights, so each
        seed gets exactly its own gradients."""
        with torch.enable_grad():
            losses = _loss(forward(dict(zip(names, weights)), buffers, x), targets, label_smoothing)
            return losses.detach(), torch.autograd.grad(losses.sum(), weights)

    # The GRU's time loop unrolls into ~2,000 operations in a trace, which replay no faster than eager
    trace = TRACE and not any(isinstance(m, UnrolledGRU) for m in base.modules())
    joint = None  # the step's function, traced at the first step

    start, window = 0, []
    ckpt = work / CHECKPOINT
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["params"][name])
            if ema is not None:
                for name in ema:
                    ema[name].copy_(state["ema"][name])
        optimizer.load_state_dict(state["optimizer"])
        rng, start = state["rng"], state["step"]
        window = list(state["window"])  # the losses of the interval under way, for its mean
    for c in ctxs:
        c.resumed_from = start
    if start:
        from ...frameworks.mmrunner import truncate_curves

        for c in ctxs:
            truncate_curves(c.curves_dir, start)  # the checkpoint is written after the step's curves
    curves = _Curves(ctxs, start)
    curves.params({"speed": {"device": "cpu", "seed_block": seeds, "engine": "vmap"}})

    pairs: dict = {}

    def perm(seed: int, epoch: int) -> torch.Tensor:
        """Seed `seed`'s order of the training set in pass `epoch` (a function of both: resumes need no state)."""
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))

    def passes(seed: int, first: int) -> torch.Tensor:
        """Seed `seed`'s orders of passes `first` and `first + 1` end to end (a batch may straddle them),
        built once per pass: concatenating them every step cost 0.6 ms per seed (LeNet-5's step is ~10 ms)."""
        if (seed, first) not in pairs:
            if len(pairs) >= 2 * k:
                pairs.clear()
            pairs[seed, first] = torch.cat([perm(seed, first), perm(seed, first + 1)])
        return pairs[seed, first]

    def indices(step: int) -> torch.Tensor:
        """The step's indices into the training set: (B,) walking the set in order and wrapping around
        (upstream's slicing), or with shuffle (S, B), a fresh permutation per pass and seed."""
        pos = torch.arange(s["batch_size"]) + step * s["batch_size"]
        if not s["shuffle"]:
            return pos % n
        first = int(pos[0]) // n
        return torch.stack([passes(seed, first)[pos - first * n] for seed in seeds])

    def evaluate(weights: dict, keep: list | None = None) -> torch.Tensor:
        """Each seed's accuracy; `keep` receives the (S, B, C) class probabilities of every batch."""
        correct = torch.zeros(k, dtype=torch.long)
        with torch.no_grad():
            for i in range(0, len(eval_set), e["batch_size"]):
                x, y = x_eval[i:i + e["batch_size"]], eval_set.y[i:i + e["batch_size"]]
                probs = forward_shared(weights, buffers, x).softmax(-1)
                if "hflip_tta" in trick:
                    probs = (probs + forward_shared(weights, buffers, x.flip(-1)).softmax(-1)) / 2
                correct += (probs.argmax(-1) == y).sum(1)
                if keep is not None:
                    keep.append(probs)
        return 100.0 * correct.double() / len(eval_set)

    def save(step: int) -> None:
        curves.flush()  # every curve row up to `step` is on disk before the checkpoint that resumes after it
        state = {"params": {kk: v.detach() for kk, v in params.items()}, "optimizer": optimizer.state_dict(),
                 "ema": ema, "rng": rng, "step": step, "window": torch.stack(window) if window else torch.zeros(0, k)}
        tmp = ckpt.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(ckpt)

    from tqdm import tqdm

    bar = tqdm(total=s["iters"], initial=start, desc=f"{recipe.name} seeds {seeds[0]}-{seeds[-1]}", disable=not progress,
               mininterval=1.0, dynamic_ncols=True, unit="it")
    t_start = time.perf_counter()
    try:
        for step in range(start, s["iters"]):
            f = lr_factor(s, step)
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * f
            idx = indices(step)
            x, y = x_train[idx], y_train[idx]
            if augmented:  # each seed draws from its own stream, through the same code as the one-seed engine
                xs, ys = [], []
                saved = torch.get_rng_state()
                for j in range(k):
                    torch.set_rng_state(rng[j])
                    xj, yj = (x[j], y[j]) if per_seed else (x, y)
                    if erasing:
                        xj = tricks.random_erasing(xj, **erasing)
                    if cut:
                        xj = tricks.cutout(xj, **cut)
                    if mixup or cutmix:
                        xj, yj = tricks.mix(xj, yj, dataset.num_classes, mixup, cutmix)
                    elif yj.ndim == 1:
                        yj = F.one_hot(yj, dataset.num_classes).to(xj.dtype)
                    xs.append(xj)
                    ys.append(yj)
                    rng[j] = torch.get_rng_state()
                torch.set_rng_state(saved)
                x, targets = torch.stack(xs), torch.stack(ys)
            elif not per_seed:
                targets = y.expand(k, -1)
            else:
                targets = y
            if joint is None:
                joint = _traced(losses_and_grads, plist, x, targets) if trace else losses_and_grads
            with torch.no_grad():
                losses, grads = joint(plist, x, targets)
            bad = ~torch.isfinite(losses)
            if bad.any():
                raise NonFiniteStep(f"the forward pass gave a non-finite loss at step {step + 1} for seed(s) "
                                    f"{[seeds[j] for j in bad.nonzero().flatten().tolist()]} of block {seeds[0]}-{seeds[-1]}"
                                    f"; training stopped, the block's last checkpoint is in {work}")
            for p, g in zip(plist, grads):
                p.grad = g
            norms = _grad_norms(grads)
            bad = ~torch.isfinite(norms)
            if bad.any():
                raise NonFiniteStep(f"the backward pass gave non-finite gradients at step {step + 1} for seed(s) "
                                    f"{[seeds[j] for j in bad.nonzero().flatten().tolist()]} of block {seeds[0]}-{seeds[-1]}"
                                    f"; training stopped, the block's last checkpoint is in {work}")
            if clip is not None:  # torch's clip_grad_norm_, per seed
                scale = (clip / (norms + 1e-6)).clamp(max=1.0)
                for g in grads:
                    g.mul_(scale.view(-1, *[1] * (g.ndim - 1)))
            optimizer.step()
            if ema is not None:  # MMEngine's ExponentialMovingAverage: avg = (1 - m) avg + m param
                with torch.no_grad():
                    for name, p in params.items():
                        ema[name].lerp_(p.detach(), trick["ema"]["momentum"])
            done = step + 1
            window.append(losses.detach())
            curves.grad_norm(done, norms.detach())
            if done % e["interval"] == 0 or done == s["iters"]:
                curves.log(done, "loss", torch.stack(window).mean(0).tolist())
                curves.log(done, "lr", [optimizer.param_groups[0]["lr"]] * k)
                curves.log(done, "accuracy", evaluate(ema or params).tolist())
                curves.flush()
                window = []
                bar.set_postfix(loss=f"{float(losses.detach().mean()):.4f}", refresh=False)
            if done % cfg["checkpoint_interval"] == 0 and done < s["iters"]:
                save(done)
            bar.update(1)
        probs: list = []
        final = evaluate(ema or params, probs)
        probs = torch.cat(probs, 1)
        for j, c in enumerate(ctxs):
            write_labels(c.outputs, getattr(eval_set, "ids", None), eval_set.y, probs[j])
    finally:
        bar.close()
        curves.close()
    wall = time.perf_counter() - t_start
    ckpt.unlink(missing_ok=True)
    return [{"metrics": {e["split"]: {"accuracy": float(a)}}, "train_seconds": wall} for a in final.tolist()]

