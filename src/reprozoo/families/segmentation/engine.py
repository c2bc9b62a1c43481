"""Builds an MMEngine Runner from an MMSegmentation config and a resolved segmentation recipe."""
from __future__ import annotations

import copy

import torch

from ...datasets_store import ensure_prepared
from ...errors import ConfigError
from ...frameworks.mmrunner import last_checkpoint_iter, truncate_curves, use_weights_only_loading
from ...seeding import seed_everything
from ..openmmlab import build, check_overrides, inner_dataset, load_config, runtime, scale_batch, train_and_test
from . import tricks
from .retina import DATASETS

VAL_KEYS = ("Dice", "mDice", "IoU", "mIoU", "aAcc")


def check_dataset(cfg, name: str, file) -> None:
    want = DATASETS.get(name).dataset_type
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        got = inner_dataset(cfg[key]["dataset"]).get("type")
        if got != want:
            raise ConfigError(file, "dataset.name", f"dataset {name!r} is a {want}, but the config's {key} reads a {got}",
                              [n for n in DATASETS.names() if DATASETS.get(n).dataset_type == got])


def runner_config(recipe, seed, ctx):
    """The MMEngine config of this recipe and seed: upstream config, overrides, tricks, data, schedule, logging."""
    import mmseg.utils

    from ...frameworks import mmrunner  # noqa: F401  registers RunDVCLiveBackend, ResumeStateHook, ProgressBarHook
    from . import metrics  # noqa: F401  registers RetinaMetric

    mmseg.utils.register_all_modules(init_default_scope=False)
    rcp = tricks.patch_recipe(recipe.config)
    cuda = torch.cuda.is_available()
    seed_everything(seed, deterministic=not cuda, threads=ctx.threads)
    use_weights_only_loading()
    cfg = load_config(rcp["config"], recipe.path)
    cfg.merge_from_dict(check_overrides(cfg, rcp["overrides"], recipe.path), allow_list_keys=True)
    hooks = tricks.patch_config(cfg, rcp["tricks"])
    s, dataset = rcp["schedule"], DATASETS.build(rcp["dataset"])
    data_dir = ensure_prepared(recipe.family, rcp["dataset"]["name"])

    for key, n in (("train_dataloader", dataset.train_images), ("val_dataloader", dataset.val_images), ("test_dataloader", dataset.val_images)):
        loader = copy.deepcopy(cfg[key].to_dict())  # the config may share one dict between val and test
        inner = inner_dataset(loader["dataset"])
        inner["data_root"] = str(data_dir)
        if n is not None:
            inner["indices"] = n
        loader.update(num_workers=s["num_workers"], persistent_workers=True)
        cfg[key] = loader  # Config stores a copy: assign after editing
    evaluator = dict(type="RetinaMetric")
    cfg.val_evaluator = cfg.test_evaluator = evaluator

    published = scale_batch(cfg, s)
    published["max_iters"] = cfg.train_cfg.max_iters
    if rcp["amp"] and cuda:
        cfg.optim_wrapper.type, cfg.optim_wrapper.loss_scale = "AmpOptimWrapper", "dynamic"
    cfg.train_cfg.update(max_iters=s["iters"], val_interval=rcp["eval"]["interval"])
    for sched in cfg.param_scheduler if isinstance(cfg.param_scheduler, list) else [cfg.param_scheduler]:
        if sched.get("end") == published["max_iters"]:
            sched["end"] = s["iters"]

    resumed = last_checkpoint_iter(ctx.work_dir)
    ctx.resumed_from = resumed
    if resumed:
        truncate_curves(ctx.curves_dir, resumed, val_keys=VAL_KEYS)
    runtime(cfg, recipe, seed, ctx, hooks=hooks, visualizer="SegLocalVisualizer", by_epoch=False,
            checkpoint_interval=rcp["checkpoint_interval"])
    params = {"config": rcp["config"], "overrides": rcp["overrides"], "tricks": [t["name"] for t in rcp["tricks"]],
              "published_batch_size": s["reference_batch_size"], "batch_size": s["batch_size"],
              "published_lr": published["lr"], "lr": cfg.optim_wrapper.optimizer.lr, "lr_scaling": s["lr_scaling"],
              "iters": s["iters"], "device": "cuda" if cuda else "cpu", "amp": bool(rcp["amp"] and cuda)}
    return cfg, params


def build_runner(recipe, seed, ctx):
    cfg, params = runner_config(recipe, seed, ctx)
    return build(cfg, params), cfg


def train(recipe, seed, ctx) -> dict:
    """Train, then test; each test image's pixel confusion matrix goes to `ctx.outputs/predictions.csv`."""
    from ...predictions import write_confusions

    runner, cfg = build_runner(recipe, seed, ctx)
    metrics = train_and_test(runner, cfg, recipe.config["tricks"], tricks.patch_test, VAL_KEYS)
    images, confusions = zip(*runner.test_loop.evaluator.metrics[0].last)
    write_confusions(ctx.outputs, list(images), confusions)
    return metrics


def evaluate(recipe, checkpoint, out_dir, *, replicates: int = 200):
    """Vessel Dice of `checkpoint` on the recipe's test images through its own test pipeline; with a subset
    of the images (`dataset.val_images`), a percentile bootstrap over the images gives the sampling error."""
    import numpy as np

    from ...family_api import EvalResult
    from ...predictions import write_confusions
    from ..openmmlab import test_checkpoint

    metrics, metric = test_checkpoint(build_runner, recipe, checkpoint, tricks.patch_test)
    images, confusions = zip(*metric.last)
    subset = recipe.config["dataset"].get("val_images") is not None
    boot = None
    if subset:
        c = np.stack([np.asarray(x, dtype=np.float64) for x in confusions])  # (images, K, K)
        rng = np.random.default_rng(0)
        draws = [c[rng.integers(0, len(c), len(c))].sum(0) for _ in range(replicates)]
        dice = [100 * 2 * d[-1, -1] / (d[-1].sum() + d[:, -1].sum()) for d in draws]
        boot = {"replicates": replicates, "ci_low": float(np.percentile(dice, 2.5)), "ci_high": float(np.percentile(dice, 97.5))}
    return EvalResult(split="test", total=len(images), metric="Dice", value=float(metrics["Dice"]),
                      metrics={k: float(metrics[k]) for k in VAL_KEYS if k in metrics}, subset=subset, bootstrap=boot,
                      predictions=write_confusions(out_dir, list(images), confusions))
