"""How each trick changes a fine-tuning run.

Schedule tricks patch the resolved recipe (`patch_recipe`); `no_bias_decay` and `layer_decay` shape
the optimizer's parameter groups (`optimizer_and_schedule`); `reinit_top` re-initialises the top of the
pretrained encoder (`patch_model`); `ema` keeps averaged weights that evaluation swaps in (`EMA`).
`check` rejects a trick that would change nothing or that the task cannot take.
"""
from __future__ import annotations

import contextlib
import copy
import math
import re
from pathlib import Path

import torch

from ...errors import ConfigError

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")  # BERT's names; run_glue's Trainer excludes the same


def _check(config: dict, trick: dict, file, key: str) -> None:
    from .glue import DATASETS, TASKS

    name, s, o, m = trick["name"], config["schedule"], config["optim"], config["model"]
    task = TASKS[DATASETS.info(config["dataset"]["name"])["task"]]
    problem = None
    if name == "cosine" and s["lr_schedule"] == "cosine":
        problem = "changes nothing: schedule.lr_schedule is already cosine"
    elif name == "warmup" and s["warmup"]:
        problem = f"changes nothing: schedule.warmup is already {s['warmup']}"
    elif name == "no_bias_decay" and o["weight_decay"] == 0:
        problem = "changes nothing: optim.weight_decay is 0"
    elif name == "label_smoothing" and task.labels is None:
        problem = f"needs classes; {task.name} is a regression task"
    elif name == "reinit_top" and m["name"] != "pretrained":
        problem = f"changes nothing: model {m['name']!r} has random weights already"
    if problem:
        raise ConfigError(file, key, f"trick {name!r} {problem}")


def check(config: dict, file) -> None:
    for i, t in enumerate(config["tricks"]):
        _check(config, t, file, f"tricks[{i}]")


def _get(tricks: list[dict], name: str) -> dict | None:
    return next((t for t in tricks if t["name"] == name), None)


def patch_recipe(config: dict) -> dict:
    """The recipe with schedule and loss tricks applied (a new dict; `label_smoothing` becomes a top-level value)."""
    cfg = copy.deepcopy(config)
    s = cfg["schedule"]
    cfg["label_smoothing"] = 0.0
    for t in cfg["tricks"]:
        if t["name"] == "cosine":
            s["lr_schedule"] = "cosine"
        elif t["name"] == "warmup":
            s["warmup"], s["warmup_start_factor"] = t["fraction"], t["start_factor"]
        elif t["name"] == "longer_schedule":
            s["epochs"] *= t["factor"]
        elif t["name"] == "label_smoothing":
            cfg["label_smoothing"] = t["epsilon"]
    return cfg


def _depth(name: str, layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder layer i, layers + 1 for the pooler and the head."""
    if ".embeddings." in f".{name}":
        return 0
    m = re.search(r"\.layer\.(\d+)\.", name)
    return int(m.group(1)) + 1 if m else layers + 1


def optimizer_and_schedule(model, cfg: dict, total_steps: int):
    """AdamW over parameter groups (decay exclusions, layer-wise lr decay) and run_glue's LambdaLR schedule."""
    o, s, tricks = cfg["optim"], cfg["schedule"], cfg["tricks"]
    layers = model.config.num_hidden_layers
    llrd = _get(tricks, "layer_decay")
    exclude = _get(tricks, "no_bias_decay") is not None
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lr = o["lr"] * (llrd["rate"] ** (layers + 1 - _depth(name, layers)) if llrd else 1.0)
        wd = 0.0 if exclude and any(k in name for k in NO_DECAY) else o["weight_decay"]
        groups.setdefault((lr, wd), []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
                            lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])
    warm = round(s["warmup"] * total_steps) if s["warmup"] else 0
    start = s.get("warmup_start_factor", 0.0)  # run_glue's linear warmup starts from 0

    def factor(step: int) -> float:
        if step < warm:
            return start + (1 - start) * step / warm
        if s["lr_schedule"] == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        if s["lr_schedule"] == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return max(0.0, 1 - progress)  # linear decay to 0, transformers' get_linear_schedule_with_warmup

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def patch_model(model, tricks: list[dict]) -> None:
    """`reinit_top`: the pooler and the top `layers` encoder layers back to the model's initialisation (Zhang et al. 2021)."""
    t = _get(tricks, "reinit_top")
    if t is None:
        return
    encoder_layers = model.base_model.encoder.layer
    if t["layers"] > len(encoder_layers):
        raise ConfigError("<recipe>", "tricks.reinit_top.layers", f"the model has {len(encoder_layers)} layers, asked to re-initialise {t['layers']}")
    for layer in list(encoder_layers)[-t["layers"]:]:
        layer.apply(model._init_weights)
    if getattr(model.base_model, "pooler", None) is not None:
        model.base_model.pooler.apply(model._init_weights)


class EMA:
    """Exponential moving average of the weights, updated after every optimizer step: ema += momentum * (w - ema)."""

    FILE = "ema.pt"

    def __init__(self, model, momentum: float):
        self.momentum = momentum
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
        self.device = next(iter(self.shadow.values())).device

    @torch.no_grad()
    def update(self, model) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v, self.momentum)

    @contextlib.contextmanager
    def swapped(self, model):
        live = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield
        finally:
            model.load_state_dict(live, strict=False)

    def save(self, folder: Path) -> None:
        torch.save(self.shadow, Path(folder) / self.FILE)

    def load(self, folder: Path) -> None:
        self.shadow = torch.load(Path(folder) / self.FILE, map_location=self.device, weights_only=True)

    def callback(self):
        from transformers import TrainerCallback

        ema = self

        class _Update(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                ema.update(model)

        return _Update()


def ema_for(model, tricks: list[dict]) -> EMA | None:
    t = _get(tricks, "ema")
    return EMA(model, t["momentum"]) if t else None
