"""Builds an MMEngine Runner from an MMDetection config and a resolved detection recipe."""
from __future__ import annotations

import copy
import logging
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import torch
from mmengine.registry import HOOKS

from ... import paths
from ...datasets_store import ensure_prepared
from ...errors import ConfigError
from ...frameworks.mmrunner import ResumeStateHook, truncate_curves, use_weights_only_loading
from ...seeding import seed_everything
from ..openmmlab import build, check_overrides, inner_dataset, load_config, runtime, scale_batch, train_and_test
from . import tricks
from .data import DATASETS
from .metrics import KEYS

log = logging.getLogger(__name__)
WEIGHTS_CHOICES = ["zoo", "none", "<path to a local checkpoint>"]


@HOOKS.register_module()
class EpochResumeStateHook(ResumeStateHook):
    """ResumeStateHook for epoch-based loops: the validation due after the resumed epoch is re-run
    (the checkpoint is written before it), counted in epochs."""

    def before_train(self, runner) -> None:
        loop, ep = runner.train_loop, runner.epoch
        if ep > 0 and runner.val_loop is not None and ep >= loop.val_begin and (ep % loop.val_interval == 0 or ep == loop.max_epochs):
            runner.val_loop.run()


def load(config: dict, file):
    """The recipe's MMDetection config with its overrides merged and its dataset's classes set."""
    cfg = load_config(config["config"], file)
    cfg.merge_from_dict(check_overrides(cfg, config["overrides"], file), allow_list_keys=True)
    return cfg


def check_dataset(cfg, name: str, file) -> None:
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        got = inner_dataset(cfg[key]["dataset"]).get("type")
        if got != "CocoDataset":
            raise ConfigError(file, "dataset.name", f"the detection datasets are COCO-format, but the config's {key} reads a {got}", DATASETS.names())


def point_at(cfg, dataset, data_dir: Path, num_workers: int) -> None:
    """Loaders and evaluators read the prepared dataset; a set with its own classes gets heads of that size."""
    for key, split, n in (("train_dataloader", "train", dataset.train_images), ("val_dataloader", "val", dataset.val_images),
                          ("test_dataloader", "val", dataset.val_images)):
        loader = copy.deepcopy(cfg[key].to_dict())  # the config may share one dict between val and test
        inner = inner_dataset(loader["dataset"])
        ann, images = dataset.splits[split]
        inner.update(data_root=str(data_dir), ann_file=ann, data_prefix=dict(img=f"{images}/"))
        if dataset.classes is not None:
            inner["metainfo"] = dict(classes=dataset.classes)
        if n is not None:
            inner["indices"] = n
        loader.update(num_workers=num_workers, persistent_workers=True)
        cfg[key] = loader  # Config stores a copy: assign after editing
    cfg.val_evaluator = cfg.test_evaluator = dict(type="CocoBoxMetric", ann_file=str(data_dir / dataset.splits["val"][0]))
    if dataset.classes is not None:
        heads = [cfg.model.get("bbox_head"), cfg.model.get("roi_head", {}).get("bbox_head"), cfg.model.get("roi_head", {}).get("mask_head")]
        for head in heads:  # the RPN head stays class-agnostic (num_classes=1)
            if head is not None:
                head.num_classes = len(dataset.classes)


def _url(ref: str) -> str:
    """An init_cfg checkpoint reference ('torchvision://resnet50', 'open-mmlab://...', http(s)) as a URL."""
    from mmengine.runner.checkpoint import get_deprecated_model_names, get_external_models, get_mmcls_models, get_torchvision_models

    scheme, _, name = ref.partition("://")
    if scheme == "torchvision":
        return get_torchvision_models()[name]
    if scheme == "open-mmlab":
        name = get_deprecated_model_names().get(name, name)
        url = get_external_models()[name]
        return url if url.startswith("http") else "https://download.openmmlab.com/" + url.lstrip("/")
    if scheme == "mmcls":
        return get_mmcls_models()[name]
    return ref


def backbone_weights(cfg, choice: str, file, *, download: bool = True) -> dict:
    """Point the backbone's init_cfg at a local file, or remove it ('none'); what the run records.

    'zoo' keeps the config's ImageNet weights, looked up by file name in torch's hub cache and in
    `<data root>/checkpoints/`, else downloaded with a timeout: offline it fails at once, naming
    the file to provide, instead of inside MMEngine's initialisation."""
    backbone = cfg.model.backbone
    init = backbone.get("init_cfg") or {}
    if choice == "none":
        backbone.init_cfg = None
        # From scratch nothing is pretrained to freeze: train the stem and normalise with batch
        # statistics, as MMDetection's configs/scratch do (He et al., Rethinking ImageNet Pre-training).
        for key, value in (("frozen_stages", -1), ("norm_eval", False)):
            if key in backbone:
                backbone[key] = value
        if "norm_cfg" in backbone:
            backbone.norm_cfg = {**backbone.norm_cfg, "requires_grad": True}
        warning = "backbone trained from scratch (backbone_weights: none): the published runs start from ImageNet weights"
        log.warning(warning)
        return {"backbone_weights": "none", "warning": warning}
    if choice != "zoo":
        path = Path(choice) if Path(choice).is_absolute() else paths.project_root() / choice
        if not path.is_file():
            raise ConfigError(file, "backbone_weights", f"no checkpoint file {path}", WEIGHTS_CHOICES)
        backbone.init_cfg = dict(type="Pretrained", checkpoint=str(path), **({"prefix": init["prefix"]} if "prefix" in init else {}))
        return {"backbone_weights": str(choice)}
    if init.get("type") != "Pretrained":
        return {"backbone_weights": "zoo (the config loads none)"}
    url = _url(init["checkpoint"])
    name = url.rsplit("/", 1)[-1]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for folder in (hub, *(root / "checkpoints" for root in paths.data_roots())):
        if (folder / name).is_file():
            backbone.init_cfg = {**init, "checkpoint": str(folder / name)}
            return {"backbone_weights": f"zoo: {init['checkpoint']} ({folder / name})"}
    if download:
        hub.mkdir(parents=True, exist_ok=True)
        partial = hub / f"{name}.partial"
        try:
            with urllib.request.urlopen(url, timeout=30) as r, open(partial, "wb") as f:
                f.write(r.read())
            partial.replace(hub / name)
            backbone.init_cfg = {**init, "checkpoint": str(hub / name)}
            return {"backbone_weights": f"zoo: {init['checkpoint']} (downloaded from {url})"}
        except (urllib.error.URLError, OSError) as e:
            partial.unlink(missing_ok=True)
            why = f"downloading {url} failed ({e})"
    else:
        why = "not downloaded here"
    where = " or ".join(str(root / "checkpoints" / name) for root in paths.data_roots())
    raise ConfigError(file, "backbone_weights", f"'zoo' needs the config's backbone weights {init['checkpoint']} and {why}. "
                      f"Put {name} at {hub / name} or {where}, give a local file, or train from scratch with 'none'", WEIGHTS_CHOICES)


def resumed_iter(work_dir: Path) -> tuple[int, int]:
    """(epoch, iteration) of the checkpoint MMEngine will resume from, (0, 0) when there is none."""
    marker = Path(work_dir) / "last_checkpoint"
    ckpt = Path(marker.read_text().strip()) if marker.exists() else None
    if ckpt is None or not ckpt.exists():
        return 0, 0
    meta = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["meta"]
    return int(meta["epoch"]), int(meta["iter"])


def runner_config(recipe, seed, ctx, *, download: bool = True, evaluating: bool = False):
    """The MMEngine config of this recipe and seed: upstream config, overrides, tricks, data, schedule, logging."""
    import mmdet.utils

    from ...frameworks import mmrunner  # noqa: F401  registers RunDVCLiveBackend, ProgressBarHook
    from . import metrics  # noqa: F401  registers CocoBoxMetric

    mmdet.utils.register_all_modules(init_default_scope=False)
    rcp = tricks.patch_recipe(recipe.config)
    cuda = torch.cuda.is_available()
    seed_everything(seed, deterministic=not cuda, threads=ctx.threads)
    use_weights_only_loading()
    cfg = load(rcp, recipe.path)
    hooks = tricks.patch_config(cfg, rcp["tricks"], recipe.path)
    s, dataset = rcp["schedule"], DATASETS.build(rcp["dataset"])
    point_at(cfg, dataset, ensure_prepared(recipe.family, rcp["dataset"]["name"]), s["num_workers"])
    if evaluating:  # every weight comes from the evaluated checkpoint
        cfg.model.backbone.init_cfg, weights = None, {"backbone_weights": "from the evaluated checkpoint"}
    else:
        weights = backbone_weights(cfg, rcp["backbone_weights"], recipe.path, download=download)

    published = scale_batch(cfg, s)
    published["epochs"] = cfg.train_cfg.max_epochs
    epochs = round((s["epochs"] or published["epochs"]) * s.get("epoch_factor", 1.0))
    if rcp["amp"] and cuda:
        cfg.optim_wrapper.type, cfg.optim_wrapper.loss_scale = "AmpOptimWrapper", "dynamic"
    cfg.train_cfg.update(max_epochs=epochs, val_interval=rcp["eval"]["interval"])
    for sched in cfg.param_scheduler if isinstance(cfg.param_scheduler, list) else [cfg.param_scheduler]:
        if sched.get("by_epoch", True) and sched.get("end") == published["epochs"]:  # the step schedule follows the epochs
            sched["milestones"] = [round(m * epochs / published["epochs"]) for m in sched.get("milestones", [])]
            sched["end"] = epochs
    cfg.default_hooks.logger = dict(type="LoggerHook", interval=rcp["log_interval"], log_metric_by_epoch=False)

    ctx.resumed_from = resumed_iter(ctx.work_dir)[1]
    if ctx.resumed_from:
        truncate_curves(ctx.curves_dir, ctx.resumed_from, val_keys=KEYS)
    runtime(cfg, recipe, seed, ctx, hooks=hooks, visualizer="DetLocalVisualizer", by_epoch=True,
            checkpoint_interval=rcp["checkpoint_interval"], resume_hook="EpochResumeStateHook")
    params = {"config": rcp["config"], "overrides": rcp["overrides"], "tricks": [t["name"] for t in rcp["tricks"]],
              "published_batch_size": s["reference_batch_size"], "batch_size": s["batch_size"],
              "published_lr": published["lr"], "lr": cfg.optim_wrapper.optimizer.lr, "lr_scaling": s["lr_scaling"],
              "published_epochs": published["epochs"], "epochs": epochs, **weights,
              "device": "cuda" if cuda else "cpu", "amp": bool(rcp["amp"] and cuda)}
    return cfg, params


def build_runner(recipe, seed, ctx, *, download: bool = True, evaluating: bool = False):
    cfg, params = runner_config(recipe, seed, ctx, download=download, evaluating=evaluating)
    return build(cfg, params), cfg


def train(recipe, seed, ctx) -> dict:
    """Train, then test; the test's detections go to `ctx.outputs` as `predictions.bbox.json`."""
    from ...predictions import write_boxes

    runner, cfg = build_runner(recipe, seed, ctx)
    metrics = train_and_test(runner, cfg, recipe.config["tricks"], tricks.patch_test, KEYS)
    write_boxes(ctx.outputs, runner.test_loop.evaluator.metrics[0].last_dets)
    return metrics


def evaluate(recipe, checkpoint, out_dir, *, replicates: int = 200):
    """Box AP of `checkpoint` on the recipe's validation set through the recipe's own test pipeline.

    When the recipe evaluates a subset (`dataset.val_images`), the AP of `replicates` bootstrap
    resamples of its images gives the sampling uncertainty; on the whole set there is none to add."""
    from ...family_api import EvalResult
    from ...predictions import write_boxes
    from ..openmmlab import test_checkpoint
    from .metrics import bootstrap_ap

    metrics, metric = test_checkpoint(partial(build_runner, evaluating=True), recipe, checkpoint, tricks.patch_test)
    subset = recipe.config["dataset"].get("val_images") is not None
    boot = None
    if subset:  # no detection at all: AP 0 in every resample
        boot = bootstrap_ap(metric.last_eval, replicates) if metric.last_eval is not None else np.zeros(replicates)
    return EvalResult(split="val", total=len(metric.last_img_ids), metric="AP", value=float(metrics["AP"]),
                      metrics={k: float(metrics[k]) for k in KEYS if k in metrics}, subset=subset,
                      bootstrap=None if boot is None else {"replicates": replicates, "ci_low": float(np.percentile(boot, 2.5)),
                                                           "ci_high": float(np.percentile(boot, 97.5))},
                      predictions=write_boxes(out_dir, metric.last_dets))
