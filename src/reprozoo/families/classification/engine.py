"""Builds and runs an MMEngine Runner from a resolved classification recipe."""
from __future__ import annotations

import logging
import uuid

import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.model import BaseModel
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.runner import Runner
from torch.utils.data import BatchSampler, DataLoader

from ... import distributed
from ...checkpoints import load_weights
from ...datasets_store import ensure_prepared
from ...errors import ConfigError
from ...predictions import write_labels
from ...frameworks.mmrunner import last_checkpoint_iter, truncate_curves, use_weights_only_loading
from ...seeding import seed_everything
from .. import openmmlab  # also registers GuardedOptimWrapper and GradientHealthHook with MMEngine
from . import OPTIMIZERS, tricks
from .datasets import DATASETS, load_splits
from .models import MODELS


class Classifier(BaseModel):
    """Cross-entropy classifier around any network that maps inputs to logits.

    The keyword arguments are where tricks act on the model (see `tricks.py`): label smoothing,
    per-sample augmentations (random erasing, AutoAugment/TrivialAugment) and MixUp/CutMix in the
    training step, flip test-time augmentation in prediction. `normalize` ((mean, std) per channel,
    0-255 scale) turns uint8 images into the network's float input, after the image policies.
    `channels_last` and `amp` (bfloat16 autocast of the network) are speed settings (see `speed_settings`).
    """

    def __init__(self, net: torch.nn.Module, num_classes: int, label_smoothing: float = 0.0, mixup_alpha: float = 0.0,
                 cutmix_alpha: float = 0.0, erasing: dict | None = None, policy: str | None = None,
                 tta_flip: bool = False, zero_init_residual: bool = False, normalize=None, cutout: dict | None = None,
                 channels_last: bool = False, amp: bool = False):
        super().__init__()
        self.net = net
        self.channels_last, self.amp = channels_last, amp
        if channels_last:
            net.to(memory_format=torch.channels_last)
        if normalize is not None:
            mean, std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in normalize)
            self.register_buffer("mean", mean, persistent=False)
            self.register_buffer("std", std, persistent=False)
        self.normalized = normalize is not None
        self.num_classes, self.label_smoothing, self.tta_flip = num_classes, label_smoothing, tta_flip
        self.mixup_alpha, self.cutmix_alpha, self.erasing, self.policy = mixup_alpha, cutmix_alpha, erasing, policy
        self.cutout = cutout
        if zero_init_residual:
            net.zero_init_residual()

    def augment(self, inputs, labels):
        """The training batch as the network sees it (the sanity checks audit exactly this)."""
        if self.policy:
            inputs = tricks.policy_augment(inputs, self.policy)
        inputs = self.prepare(inputs)
        if self.erasing:
            inputs = tricks.random_erasing(inputs, **self.erasing)
        if self.cutout:
            inputs = tricks.cutout(inputs, **self.cutout)
        if self.mixup_alpha > 0 or self.cutmix_alpha > 0:
            inputs, labels = tricks.mix(inputs, labels, self.num_classes, self.mixup_alpha, self.cutmix_alpha)
        return inputs, labels

    def prepare(self, inputs):
        x = (inputs.float() - self.mean) / self.std if self.normalized else inputs
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def logits(self, x):
        """The network's output, in float32 even under autocast (the loss and softmax stay in float32)."""
        if not self.amp:
            return self.net(x)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            return self.net(x).float()

    def parse_losses(self, losses: dict):
        """MMEngine's `parse_losses` for the one scalar loss this model returns, without its per-step
        `mean()` and `0 + loss` (the same value and gradients, bitwise; three fewer autograd nodes)."""
        loss = losses["loss"]
        return loss, {"loss": loss}

    def forward(self, inputs, labels=None, mode="tensor"):
        if mode == "loss":
            inputs, targets = self.augment(inputs, labels)
            return {"loss": F.cross_entropy(self.logits(inputs), targets, label_smoothing=self.label_smoothing)}
        inputs = self.prepare(inputs)
        logits = self.logits(inputs)
        if mode == "predict":
            probs = logits.softmax(-1)
            if self.tta_flip:
                probs = (probs + self.logits(inputs.flip(-1)).softmax(-1)) / 2
            return [(probs.argmax(-1), labels, probs)]
        return logits


class Accuracy(BaseMetric):
    """Top-1 accuracy in percent; `last` keeps the last evaluation's (labels, probabilities) for its predictions file."""

    default_prefix = ""  # metric keys stay plain ("accuracy"); None makes mmengine warn

    def process(self, data_batch, data_samples) -> None:
        for pred, labels, probs in data_samples:
            self.results.append((int((pred == labels).sum()), len(labels), labels.cpu(), probs.float().cpu()))

    def compute_metrics(self, results) -> dict:
        correct = sum(r[0] for r in results)
        total = sum(r[1] for r in results)
        self.last = (torch.cat([r[2] for r in results]), torch.cat([r[3] for r in results]))
        return {"accuracy": 100.0 * correct / total}


def _optimizer(o: dict) -> dict:
    cfg = {"type": OPTIMIZERS[o["name"]], "lr": o["lr"], "weight_decay": o["weight_decay"]}
    if o["name"] == "sgd":
        cfg.update(momentum=o["momentum"], nesterov=o["nesterov"])
    else:
        cfg.update(betas=tuple(o["betas"]))
    return cfg


def _schedulers(s: dict) -> list[dict]:
    out, begin = [], 0
    if s["warmup_iters"]:
        out.append(dict(type="LinearLR", start_factor=s["warmup_factor"], by_epoch=False, begin=0, end=s["warmup_iters"]))
        begin = s["warmup_iters"]
    if s["lr_schedule"] == "multistep":
        out.append(dict(type="MultiStepLR", milestones=s["milestones"], gamma=s["gamma"], by_epoch=False, begin=0, end=s["iters"]))
    elif s["lr_schedule"] == "cosine":
        out.append(dict(type="CosineAnnealingLR", T_max=s["iters"] - begin, eta_min=0.0, by_epoch=False, begin=begin, end=s["iters"]))
    return out


def batch_loader(dataset, batch_size: int, *, shuffle: bool, seed: int, infinite: bool) -> DataLoader:
    """A DataLoader that fetches each batch with one index operation (see ArrayDataset)."""
    base = InfiniteSampler(dataset, shuffle=shuffle, seed=seed) if infinite else DefaultSampler(dataset, shuffle=False)
    return BatchLoader(dataset, sampler=BatchSampler(base, batch_size, drop_last=False), batch_size=None)


class BatchLoader(DataLoader):
    """A DataLoader whose iterator only indexes the dataset with each batch of indices its sampler yields:
    no worker processes, collation or per-batch profiler scope, which a batch that is one tensor index
    does not need (they cost about 1% of a LeNet-5 step). MMEngine's Runner takes it as any DataLoader."""

    def __iter__(self):
        return (self.dataset[indices] for indices in self.sampler)


def speed_settings(speed: dict, device: torch.device) -> dict:
    """The recipe's `speed` section resolved for `device`: `auto` means on for a GPU, off for a CPU
    (on a CPU channels_last and bfloat16 change the numbers and are rarely faster)."""
    gpu = device.type == "cuda"

    def resolve(v):
        return gpu if v == "auto" else v == "on"

    return {"device": str(device), "data_on_device": bool(speed["data_on_device"]),
            "channels_last": resolve(speed["channels_last"]), "amp": resolve(speed["amp"])}


def runner_config(recipe, seed, ctx) -> dict:
    """The keyword arguments of MMEngine's Runner for this recipe and seed, tricks applied."""
    cfg = tricks.patch_recipe(recipe.config)
    seed_everything(seed, deterministic=True, threads=ctx.threads)
    use_weights_only_loading()
    dataset = DATASETS.build(cfg["dataset"])
    data_dir = ensure_prepared(recipe.family, cfg["dataset"]["name"])
    train_set, eval_set, held_out = load_splits(dataset, data_dir, cfg["eval"])
    if held_out:
        ctx.record["val_split"] = held_out
    net = MODELS.build(cfg["model"])  # built right after seeding: the init depends only on the seed
    speed = speed_settings(cfg["speed"], torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    ctx.speed = speed
    if speed["data_on_device"]:  # one gather per batch on the device, no host-to-device copy per step
        train_set.to(speed["device"])
        eval_set.to(speed["device"])

    resumed = last_checkpoint_iter(ctx.work_dir)
    ctx.resumed_from = resumed
    if resumed:
        truncate_curves(ctx.curves_dir, resumed, val_keys=("accuracy",))
    s, e = cfg["schedule"], cfg["eval"]
    ddp = _ddp(cfg, ctx, speed)
    devices = cfg.get("devices", 1)
    # MMEngine's samplers give each rank every devices-th sample of the one stream: per step the ranks
    # together see the batch one process would, and DDP averages their gradients into its gradient
    eval_loader = batch_loader(eval_set, -(-e["batch_size"] // devices), shuffle=False, seed=seed, infinite=False)
    runner_cfg = dict(
        model=dict(net=net, num_classes=dataset.num_classes, normalize=getattr(dataset, "normalize", None),
                   channels_last=speed["channels_last"] and train_set.x.ndim == 4, amp=speed["amp"]),
        work_dir=str(ctx.work_dir),
        experiment_name=f"{recipe.name}-seed{seed}-{uuid.uuid4().hex[:8]}",
        train_dataloader=batch_loader(train_set, s["batch_size"] // devices, shuffle=s["shuffle"], seed=seed, infinite=True),
        train_cfg=dict(type="IterTrainLoop", max_iters=s["iters"], val_interval=e["interval"]),
        val_dataloader=eval_loader, val_cfg=dict(), val_evaluator=Evaluator([Accuracy()]),
        test_dataloader=eval_loader, test_cfg=dict(), test_evaluator=Evaluator([Accuracy()]),
        optim_wrapper=dict(type="GuardedOptimWrapper", optimizer=_optimizer(cfg["optim"])),
        param_scheduler=_schedulers(s) or None,
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=e["interval"], log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=cfg["checkpoint_interval"], max_keep_ckpts=1,
                            save_param_scheduler=bool(_schedulers(s))),
            sampler_seed=None,  # InfiniteSampler reshuffles by itself; our loader has no batch_sampler
        ),
        custom_hooks=[dict(type="ResumeStateHook"), dict(type="GradientHealthHook"),
                      dict(type="ProgressBarHook", desc=f"{recipe.name} seed {seed}", enable=ctx.progress)],
        visualizer=dict(type="Visualizer", vis_backends=[dict(type="RunDVCLiveBackend", save_dir=str(ctx.curves_dir),
                                                             init_kwargs=dict(resume=bool(resumed)))]),
        log_processor=dict(by_epoch=False, window_size=e["interval"]),
        log_level=logging.WARNING,
        randomness=dict(seed=seed, deterministic=True),
        resume=True,
        default_scope="mmengine",
        **ddp,
    )
    return tricks.patch_runner(runner_cfg, cfg["tricks"])


def _ddp(cfg: dict, ctx, speed: dict) -> dict:
    """The Runner arguments of a `devices: N` run (inside torchrun), and its env.json record."""
    devices = cfg.get("devices", 1)
    if devices == 1:
        return {}
    backend = distributed.init()  # before the Runner: MMEngine's own init would pin a CUDA device on a CPU
    ctx.record["distributed"] = {**distributed.shares(cfg["schedule"]["batch_size"], devices), "backend": backend}
    wrapper = dict(type="MMDistributedDataParallel", broadcast_buffers=False)
    if not speed["device"].startswith("cuda"):
        wrapper["device_ids"] = None  # CPU DDP (MMEngine would pass [LOCAL_RANK], a CUDA index)
    return dict(launcher="pytorch", cfg=dict(model_wrapper_cfg=wrapper))  # the Runner reads the wrapper from its cfg


def build_runner(recipe, seed, ctx) -> Runner:
    runner_cfg = runner_config(recipe, seed, ctx)
    runner = Runner(model=Classifier(**runner_cfg.pop("model")), **runner_cfg)
    live = runner.visualizer.get_backend("RunDVCLiveBackend")  # none on DDP ranks other than 0
    if live is not None:
        live.experiment.log_params({"speed": ctx.speed})
    return runner


def train(recipe, seed, ctx) -> dict:
    """Train, then test; a step with a non-finite loss or gradients stops the run (see GuardedOptimWrapper).
    The test's per-sample predictions go to `ctx.outputs` (rank 0 only)."""
    runner = build_runner(recipe, seed, ctx)
    split = recipe.config["eval"]["split"]
    metrics = {split: openmmlab.train_and_test(runner, None, [], lambda *_: None, ("accuracy",))["test"]}
    if distributed.world()[0] == 0:
        labels, probs = runner.test_evaluator.metrics[0].last
        write_labels(ctx.outputs, getattr(runner.test_dataloader.dataset, "ids", None), labels, probs)
    return metrics


def load_checkpoint(net: torch.nn.Module, path) -> None:
    """Load a published checkpoint: a state dict, {'state_dict': ...} or an MMEngine checkpoint; `module.`
    prefixes (DataParallel) removed. BatchNorm's `num_batches_tracked`, absent from checkpoints older
    than PyTorch 0.4.1, may be missing. Loaded weights-only: a checkpoint never runs code."""
    obj = load_weights(path)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    sd = {k.removeprefix("module.").removeprefix("net."): v for k, v in sd.items()}
    try:
        missing, unexpected = net.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ConfigError(path, None, f"the checkpoint does not fit the model {type(net).__name__}: {str(e).splitlines()[-1].strip()}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ConfigError(path, None, f"the checkpoint does not fit the model {type(net).__name__}: "
                          f"missing {missing[:5]}, unexpected {unexpected[:5]}")


def evaluate(recipe, checkpoint, out_dir):
    """Top-1 of a checkpoint on the recipe's eval split, through the recipe's own test pipeline."""
    from ...family_api import EvalResult

    cfg = recipe.config
    dataset = DATASETS.build(cfg["dataset"])
    eval_set = load_splits(dataset, ensure_prepared(recipe.family, cfg["dataset"]["name"]), cfg["eval"])[1]
    net = MODELS.build(cfg["model"])
    load_checkpoint(net, checkpoint)
    model = Classifier(net, dataset.num_classes, normalize=getattr(dataset, "normalize", None)).eval()
    correct = total = 0
    all_labels, all_probs = [], []
    with torch.no_grad():
        for batch in batch_loader(eval_set, cfg["eval"]["batch_size"], shuffle=False, seed=0, infinite=False):
            (pred, labels, probs), = model(batch["inputs"], batch["labels"], mode="predict")
            correct += int((pred == labels).sum())
            total += len(labels)
            all_labels.append(labels)
            all_probs.append(probs)
    path = write_labels(out_dir, getattr(eval_set, "ids", None), torch.cat(all_labels), torch.cat(all_probs))
    return EvalResult(split=cfg["eval"]["split"], total=total, metric="accuracy", value=100.0 * correct / total,
                      correct=correct, predictions=path)
