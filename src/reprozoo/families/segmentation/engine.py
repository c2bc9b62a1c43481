"""Builds an MMEngine Runner from an MMSegmentation config and a resolved segmentation recipe."""
from __future__ import annotations

import copy
import logging
import uuid
from pathlib import Path

import torch

from ...datasets_store import ensure_prepared
from ...errors import ConfigError
from ...frameworks.mmrunner import last_checkpoint_iter, truncate_curves, use_weights_only_loading
from ...seeding import seed_everything
from . import tricks
from .retina import DATASETS

VAL_KEYS = ("Dice", "mDice", "IoU", "mIoU", "aAcc")


def load_config(ref: str, file):
    """The MMSegmentation config `ref` ('mmseg::dir/name.py' or a path), or a ConfigError listing its neighbours."""
    from mmengine.config import Config

    try:
        return Config.fromfile(resolve_config(ref))
    except (FileNotFoundError, OSError, ValueError, SyntaxError) as e:
        raise ConfigError(file, "config", f"cannot load {ref!r}: {e}", _neighbours(ref)) from None


def resolve_config(ref: str) -> Path:
    """'mmseg::unet/x.py' -> the file in the installed package's model zoo (Config.fromfile reads paths only)."""
    if not ref.startswith("mmseg::"):
        return Path(ref)
    import mmseg

    return Path(mmseg.__file__).parent / ".mim" / "configs" / ref[len("mmseg::"):]


def _neighbours(ref: str) -> list[str] | None:
    if not ref.startswith("mmseg::"):
        return None
    folder = resolve_config(ref).parent
    return [f"mmseg::{folder.name}/{p.name}" for p in sorted(folder.glob("*.py"))] if folder.is_dir() else None


def check_overrides(cfg, overrides: dict, file) -> dict:
    """Every dotted key must name something the config has: an override never adds a key silently.

    Returns the overrides ready to merge: a YAML list replacing a tuple becomes a tuple, since
    MMCV's transforms accept sizes only as tuples (RandomResize(scale=(w, h)))."""
    out = {}
    for dotted, value in overrides.items():
        node, path = cfg.to_dict(), []
        for part in str(dotted).split("."):
            if isinstance(node, (list, tuple)):
                ok = part.isdigit() and int(part) < len(node)
                allowed = [str(i) for i in range(len(node))]
                node = node[int(part)] if ok else None
            else:
                ok = isinstance(node, dict) and part in node
                allowed = list(node) if isinstance(node, dict) else []
                node = node[part] if ok else None
            if not ok:
                where = ".".join(path) or "the top level"
                raise ConfigError(file, f"overrides.{dotted}", f"the config has no key {part!r} at {where}", allowed)
            path.append(part)
        out[dotted] = tuple(value) if isinstance(node, tuple) and isinstance(value, list) else value
    return out


def _inner(dataset_cfg):
    """The dataset inside wrappers such as RepeatDataset."""
    while "dataset" in dataset_cfg:
        dataset_cfg = dataset_cfg["dataset"]
    return dataset_cfg


def check_dataset(cfg, name: str, file) -> None:
    want = DATASETS.get(name).dataset_type
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        got = _inner(cfg[key]["dataset"]).get("type")
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
        inner = _inner(loader["dataset"])
        inner["data_root"] = str(data_dir)
        if n is not None:
            inner["indices"] = n
        loader.update(num_workers=s["num_workers"], persistent_workers=True)
        cfg[key] = loader  # Config stores a copy: assign after editing
    evaluator = dict(type="RetinaMetric")
    cfg.val_evaluator = cfg.test_evaluator = evaluator

    published = dict(batch_size=cfg.train_dataloader.batch_size, lr=cfg.optim_wrapper.optimizer.lr, max_iters=cfg.train_cfg.max_iters)
    cfg.train_dataloader.batch_size = s["batch_size"]
    if s["lr_scaling"] == "linear":
        cfg.optim_wrapper.optimizer.lr = published["lr"] * s["batch_size"] / s["reference_batch_size"]
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
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=False, interval=rcp["checkpoint_interval"],
                                        max_keep_ckpts=1, save_last=True)
    cfg.default_hooks.pop("visualization", None)  # draws nothing unless asked; the curves go through DVCLive
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), *hooks, dict(type="ResumeStateHook"),
                        dict(type="ProgressBarHook", desc=f"{recipe.name} seed {seed}", enable=ctx.progress)]
    cfg.visualizer = dict(type="SegLocalVisualizer", vis_backends=[dict(type="RunDVCLiveBackend", save_dir=str(ctx.curves_dir),
                                                                         init_kwargs=dict(resume=bool(resumed)))])
    cfg.update(work_dir=str(ctx.work_dir), experiment_name=f"{recipe.name}-seed{seed}-{uuid.uuid4().hex[:8]}",
               randomness=dict(seed=seed, deterministic=not cuda), resume=True, load_from=None, log_level=logging.WARNING)
    cfg.log_processor = dict(by_epoch=False)
    params = {"config": rcp["config"], "overrides": rcp["overrides"], "tricks": [t["name"] for t in rcp["tricks"]],
              "published_batch_size": s["reference_batch_size"], "batch_size": s["batch_size"],
              "published_lr": published["lr"], "lr": cfg.optim_wrapper.optimizer.lr, "lr_scaling": s["lr_scaling"],
              "iters": s["iters"], "device": "cuda" if cuda else "cpu", "amp": bool(rcp["amp"] and cuda)}
    return cfg, params


def build_runner(recipe, seed, ctx):
    from mmengine.runner import Runner

    cfg, params = runner_config(recipe, seed, ctx)
    runner = Runner.from_cfg(cfg)
    runner.visualizer.get_backend("RunDVCLiveBackend").experiment.log_params(params)
    return runner, cfg


def _stop_workers(runner) -> None:
    """Shut the loader processes down now, not when the runner is collected: forked workers hold a
    copy of the run's lock file, so a run that failed inside this process could not be retried."""
    from mmengine.runner import BaseLoop

    for loop in (runner._train_loop, runner._val_loop, runner._test_loop):
        if not isinstance(loop, BaseLoop):
            continue
        for it in (getattr(loop.dataloader, "_iterator", None),
                   getattr(getattr(loop, "dataloader_iterator", None), "_iterator", None)):
            if hasattr(it, "_shutdown_workers"):
                it._shutdown_workers()


def train(recipe, seed, ctx) -> dict:
    runner, cfg = build_runner(recipe, seed, ctx)
    try:
        runner.train()
        tricks.patch_test(runner, cfg, recipe.config["tricks"])
        metrics = runner.test_loop.run()  # not runner.test(): that would resume from the checkpoint again
    finally:
        _stop_workers(runner)
        runner.visualizer.close()
    return {"test": {k: float(metrics[k]) for k in VAL_KEYS}}
