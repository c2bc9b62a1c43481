"""How each trick changes a classification run.

A trick patches the resolved recipe (schedules: they are recipe settings already) and/or the MMEngine
Runner config that `engine.runner_config` builds: `custom_hooks` (EMAHook), `optim_wrapper`
(clip_grad, paramwise_cfg), and `model`, the keyword arguments of `engine.Classifier` (loss
settings, batch augmentations, test-time augmentation). `check` rejects a trick that the recipe's
model or dataset cannot take, or that would change nothing, when the recipe is loaded; the range of
each parameter is declared and checked in `reprozoo.tricks`.
"""
from __future__ import annotations

import math

import torch

from ...errors import ConfigError
from ...schema import MAX_INT


def _check(config: dict, trick: dict, file, key: str) -> None:
    from .datasets import DATASETS
    from .models import MODELS

    name, s, o = trick["name"], config["schedule"], config["optim"]
    problem = None
    if name == "cosine" and s["lr_schedule"] == "cosine":
        problem = "changes nothing: schedule.lr_schedule is already cosine"
    elif name == "warmup" and s["warmup_iters"]:
        problem = f"changes nothing: schedule.warmup_iters is already {s['warmup_iters']}"
    elif name == "no_bias_decay" and o["weight_decay"] == 0:
        problem = "changes nothing: optim.weight_decay is 0"
    elif name == "zero_init_residual" and not hasattr(MODELS.get(config["model"]["name"]), "zero_init_residual"):
        problem = f"model {config['model']['name']!r} has no residual blocks with a normalisation layer"
    elif name in ("trivialaugment", "autoaugment") and DATASETS.info(config["dataset"]["name"]).get("modality") != "image":
        problem = f"needs images; dataset {config['dataset']['name']!r} holds " \
                  f"{DATASETS.info(config['dataset']['name']).get('modality', 'non-image')} inputs"
    elif name == "warmup" and round(trick["fraction"] * s["iters"]) < 2:
        raise ConfigError(file, f"{key}.fraction", f"gives {round(trick['fraction'] * s['iters'])} warmup iterations of "
                                                   f"{s['iters']}; a LinearLR warmup needs at least 2")
    elif name == "longer_schedule" and s["iters"] * trick["factor"] > MAX_INT:
        raise ConfigError(file, f"{key}.factor", f"makes {s['iters'] * trick['factor']:.0f} iterations, beyond any run")
    elif name == "cutout" and trick["size"] > (side := DATASETS.info(config["dataset"]["name"])["input_size"]):
        raise ConfigError(file, f"{key}.size", f"must be at most the input size {side} of dataset "
                                              f"{config['dataset']['name']!r}, got {trick['size']!r}")
    if problem:
        raise ConfigError(file, key, f"trick {name!r} {problem}")


def check(config: dict, file) -> None:
    for i, t in enumerate(config["tricks"]):
        _check(config, t, file, f"tricks[{i}]")


def patch_recipe(config: dict) -> dict:
    """The recipe with the schedule tricks applied (a new dict; the recipe itself keeps its tricks list)."""
    import copy

    cfg = copy.deepcopy(config)
    s = cfg["schedule"]
    for t in cfg["tricks"]:
        if t["name"] == "cosine":
            s["lr_schedule"] = "cosine"
        elif t["name"] == "warmup":
            s["warmup_iters"] = max(1, round(t["fraction"] * s["iters"]))
            s["warmup_factor"] = t["start_factor"]
        elif t["name"] == "longer_schedule":
            f = t["factor"]
            s["iters"] = round(s["iters"] * f)
            s["milestones"] = [round(m * f) for m in s["milestones"]]
            s["warmup_iters"] = round(s["warmup_iters"] * f)
    return cfg


def patch_runner(runner_cfg: dict, tricks: list[dict]) -> dict:
    """Apply the tricks that live in the MMEngine config (hooks, optimizer wrapper, model settings)."""
    model, optim = runner_cfg["model"], runner_cfg["optim_wrapper"]
    for t in tricks:
        n = t["name"]
        if n == "ema":
            runner_cfg["custom_hooks"].append(dict(type="EMAHook", momentum=t["momentum"], update_buffers=True, priority="ABOVE_NORMAL"))
        elif n == "clip_grad":
            optim["clip_grad"] = dict(max_norm=t["max_norm"])
        elif n == "no_bias_decay":
            optim["paramwise_cfg"] = dict(norm_decay_mult=0.0, bias_decay_mult=0.0)
        elif n == "label_smoothing":
            model["label_smoothing"] = t["epsilon"]
        elif n == "mixup":
            model["mixup_alpha"] = t["alpha"]
        elif n == "cutmix":
            model["cutmix_alpha"] = t["alpha"]
        elif n == "random_erasing":
            model["erasing"] = {k: v for k, v in t.items() if k != "name"}
        elif n == "cutout":
            model["cutout"] = {"size": t["size"], "p": t["p"]}
        elif n == "trivialaugment":
            model["policy"] = "trivialaugment"
        elif n == "autoaugment":
            model["policy"] = f"autoaugment-{t['policy']}"
        elif n == "hflip_tta":
            model["tta_flip"] = True
        elif n == "zero_init_residual":
            model["zero_init_residual"] = True
    return runner_cfg


# ---- batch augmentations: they act on the tensors that reach the model, in the training step ----

def _spatial_dims(x: torch.Tensor) -> list[int]:
    """(N, L) sequences: [1]; (N, C, L): [2]; (N, C, H, W): [2, 3]."""
    return [1] if x.ndim == 2 else list(range(2, x.ndim))


def _box(shape: list[int], area: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes covering ~`area` of each of `n` samples: starts and lengths, (n, dims)."""
    side = area ** (1.0 / len(shape))
    sizes = torch.tensor(shape)
    lengths = (sizes * side).round().long().clamp(min=0).expand(n, -1).clone()
    centres = (torch.rand(n, len(shape)) * sizes).long()
    starts = (centres - lengths // 2).clamp(min=0)
    ends = torch.minimum(centres + (lengths + 1) // 2, sizes)
    return starts, ends - starts


def _box_mask(x: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Boolean mask of x's shape (channels broadcast) that is True inside each sample's box."""
    dims = _spatial_dims(x)
    mask = torch.ones(x.shape[0], *[1] * (x.ndim - 1), dtype=torch.bool)
    for j, d in enumerate(dims):
        ar = torch.arange(x.shape[d])
        inside = (ar >= starts[:, j:j + 1]) & (ar < (starts[:, j] + lengths[:, j])[:, None])  # (n, size)
        view = [x.shape[0]] + [1] * (x.ndim - 1)
        view[d] = x.shape[d]
        mask = mask & inside.view(view)
    return mask


def random_erasing(x: torch.Tensor, p: float, min_area: float, max_area: float, value: float) -> torch.Tensor:
    n = x.shape[0]
    apply = torch.rand(n) < p
    area = min_area + torch.rand(n) * (max_area - min_area)
    shape = [x.shape[d] for d in _spatial_dims(x)]
    boxes = [_box(shape, float(a), 1) for a in area]
    starts, lengths = torch.cat([b[0] for b in boxes]), torch.cat([b[1] for b in boxes])
    mask = _box_mask(x, starts, lengths) & apply.view(n, *[1] * (x.ndim - 1))
    return x.masked_fill(mask, value)


def cutout(x: torch.Tensor, size: int, p: float) -> torch.Tensor:
    """Cutout as its authors' code: the square's centre is uniform over the image, so it may be clipped."""
    n, dims = x.shape[0], _spatial_dims(x)
    shape = torch.tensor([x.shape[d] for d in dims])
    centres = (torch.rand(n, len(dims)) * shape).long()
    starts = (centres - size // 2).clamp(min=0)
    ends = torch.minimum(centres + size - size // 2, shape)
    mask = _box_mask(x, starts, ends - starts) & (torch.rand(n) < p).view(n, *[1] * (x.ndim - 1))
    return x.masked_fill(mask, 0.0)


def mix(x: torch.Tensor, targets: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float):
    """MixUp or CutMix (one of them per batch, with equal odds when both are on, as timm's Mixup)."""
    if targets.ndim == 1:
        targets = torch.nn.functional.one_hot(targets, num_classes).to(x.dtype)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or bool(torch.rand(()) < 0.5))
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0])
    if use_cutmix:
        shape = [x.shape[d] for d in _spatial_dims(x)]
        starts, lengths = _box(shape, 1.0 - lam, 1)
        mask = _box_mask(x[:1], starts, lengths).expand_as(x)
        x = torch.where(mask, x[perm], x)
        lam = 1.0 - float(lengths.prod()) / math.prod(shape)  # the area actually pasted
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    return x, lam * targets + (1.0 - lam) * targets[perm]


def policy_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """AutoAugment / TrivialAugment per image on uint8 (N, C, H, W) batches, one draw per image."""
    from torchvision.transforms import v2

    if policy == "trivialaugment":
        t = v2.TrivialAugmentWide()
    else:
        t = v2.AutoAugment(v2.AutoAugmentPolicy(policy.split("-", 1)[1]))
    return torch.stack([t(img) for img in x])
