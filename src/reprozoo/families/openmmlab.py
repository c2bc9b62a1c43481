"""What the families that run OpenMMLab model-zoo configs share (segmentation on MMSegmentation,
detection on MMDetection): finding and loading a zoo config, checked overrides, batch-size and
learning-rate scaling, and the runtime settings every run gets (checkpoints, DVCLive, resume, seed).
"""
from __future__ import annotations

import logging
import uuid
from pathlib import Path

from ..errors import ConfigError


def config_ref_check(scope: str):
    """A schema check for `config:`: '<scope>::<dir>/<name>.py' or a path to a .py file."""
    def check(v):
        return None if v.startswith(f"{scope}::") or v.endswith(".py") else \
            f"expected '{scope}::<dir>/<config>.py' or a path to a .py config, got {v!r}"
    return check


def resolve_config(ref: str) -> Path:
    """'mmseg::unet/x.py' -> the file in the installed package's model zoo (Config.fromfile reads paths only)."""
    scope, sep, rel = ref.partition("::")
    if not sep:
        return Path(ref)
    import importlib

    return Path(importlib.import_module(scope).__file__).parent / ".mim" / "configs" / rel


def load_config(ref: str, file):
    """The config `ref` ('<scope>::dir/name.py' or a path), or a ConfigError listing its neighbours."""
    from mmengine.config import Config

    try:
        return Config.fromfile(resolve_config(ref))
    except (FileNotFoundError, OSError, ValueError, SyntaxError) as e:
        raise ConfigError(file, "config", f"cannot load {ref!r}: {e}", _neighbours(ref)) from None


def _neighbours(ref: str) -> list[str] | None:
    scope, sep, _ = ref.partition("::")
    if not sep:
        return None
    folder = resolve_config(ref).parent
    return [f"{scope}::{folder.name}/{p.name}" for p in sorted(folder.glob("*.py"))] if folder.is_dir() else None


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


def inner_dataset(dataset_cfg):
    """The dataset inside wrappers such as RepeatDataset."""
    while "dataset" in dataset_cfg:
        dataset_cfg = dataset_cfg["dataset"]
    return dataset_cfg


def scale_batch(cfg, schedule: dict) -> dict:
    """Set the recipe's batch size and scale the learning rate with it (Goyal et al. 2017) when asked;
    return the config's own batch size and lr, which the run records beside the new ones."""
    published = dict(batch_size=cfg.train_dataloader.batch_size, lr=cfg.optim_wrapper.optimizer.lr)
    cfg.train_dataloader.batch_size = schedule["batch_size"]
    if schedule["lr_scaling"] == "linear":
        cfg.optim_wrapper.optimizer.lr = published["lr"] * schedule["batch_size"] / schedule["reference_batch_size"]
    return published


def runtime(cfg, recipe, seed, ctx, *, hooks: list, visualizer: str, by_epoch: bool, checkpoint_interval: int,
            resume_hook: str = "ResumeStateHook") -> None:
    """The settings every run gets: resumable checkpoints in the run's work dir, curves through the run's
    DVCLive backend, a progress bar, the seed, and MMEngine's own logging kept quiet."""
    import torch

    cuda = torch.cuda.is_available()
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=by_epoch, interval=checkpoint_interval,
                                        max_keep_ckpts=1, save_last=True)
    cfg.default_hooks.pop("visualization", None)  # draws nothing unless asked; the curves go through DVCLive
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), *hooks, dict(type=resume_hook),
                        dict(type="ProgressBarHook", desc=f"{recipe.name} seed {seed}", enable=ctx.progress)]
    cfg.visualizer = dict(type=visualizer, vis_backends=[dict(type="RunDVCLiveBackend", save_dir=str(ctx.curves_dir),
                                                              init_kwargs=dict(resume=bool(ctx.resumed_from)))])
    cfg.update(work_dir=str(ctx.work_dir), experiment_name=f"{recipe.name}-seed{seed}-{uuid.uuid4().hex[:8]}",
               randomness=dict(seed=seed, deterministic=not cuda), resume=True, load_from=None, log_level=logging.WARNING)
    cfg.log_processor = dict(by_epoch=False)


def stop_workers(runner) -> None:
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
