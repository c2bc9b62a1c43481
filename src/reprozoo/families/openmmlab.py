"""What the families that run OpenMMLab model-zoo configs share (segmentation on MMSegmentation,
detection on MMDetection): finding and loading a zoo config, checked overrides, batch-size and
learning-rate scaling, and the runtime settings every run gets (checkpoints, DVCLive, resume, seed).
"""
from __future__ import annotations

import copy
import logging
import math
import uuid
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS, OPTIM_WRAPPERS
from torch.utils._foreach_utils import _has_foreach_support  # what get_total_norm itself asks

from ..errors import ConfigError, NonFiniteStep


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(OptimWrapper):
    """OptimWrapper that measures the global gradient norm of every step and refuses a step whose loss
    (forward pass) or gradients (backward pass) are not finite, before the optimizer touches the weights.

    The norm is `torch.nn.utils.get_total_norm`, the one `clip_grad_norm_` computes (which would then
    multiply every gradient by 1: a pass over the weights for nothing, and by NaN when the norm is NaN)."""

    last_terms: dict | None = None  # the loss terms of the current step, set by GradientHealthHook
    last_grad_norm: float | None = None

    def _where(self) -> str:
        terms = ", ".join(f"{k} {float(v.detach() if torch.is_tensor(v) else v):.4g}" for k, v in (self.last_terms or {}).items())
        return f"step {self.message_hub.get_info('iter', 0) + 1}" + (f" (loss terms: {terms})" if terms else "")

    def scale_loss(self, loss):
        # MMEngine divides by 1 when gradients are not accumulated: an autograd node per step, same bits
        return loss if self._accumulative_counts == 1 else super().scale_loss(loss)

    def update_params(self, loss, step_kwargs=None, zero_kwargs=None) -> None:
        value = loss.detach()
        if not (math.isfinite(value.item()) if value.numel() == 1 else bool(torch.isfinite(value).all())):
            raise NonFiniteStep(f"the forward pass gave a non-finite loss at {self._where()}")
        super().update_params(loss, step_kwargs, zero_kwargs)

    def step(self, **kwargs) -> None:
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = float(total_norm([p.grad for p in params])) if params else 0.0
        self.last_grad_norm = norm
        if not math.isfinite(norm):
            bad = sum(not torch.isfinite(p.grad).all() for p in params)
            raise NonFiniteStep(f"the backward pass gave non-finite gradients in {bad} of {len(params)} tensors at {self._where()}")
        super().step(**kwargs)


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """`torch.nn.utils.get_total_norm(grads)` (the L2 norm of all of them), bitwise. When every gradient has
    the same device and dtype it skips that function's grouping by device and dtype, which costs more
    than the norm itself on a small network (a few percent of a LeNet-5 step)."""
    first = grads[0]
    device, dtype = first.device, first.dtype
    if all(g.device == device and g.dtype == dtype for g in grads) and _has_foreach_support(grads, device):
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    return torch.nn.utils.get_total_norm(grads)


@HOOKS.register_module()
class GradientHealthHook(Hook):
    """Logs the gradient norm of every step to the run's curves (`grad_norm`) and hands the step's loss
    terms to GuardedOptimWrapper, so that a refused step names them.

    The rows are kept in memory and appended in one write at each validation, before each checkpoint
    (so every row up to the step a resumed run starts from is on disk) and at the end of training."""

    priority = "LOW"
    flush_rows = 1000  # and at least this often

    def __init__(self):
        self.rows: list[tuple[int, float]] = []

    def before_train(self, runner) -> None:
        model = getattr(runner.model, "module", runner.model)
        wrapper, parse = runner.optim_wrapper, model.parse_losses

        def parse_losses(losses):
            loss, log_vars = parse(losses)
            wrapper.last_terms = log_vars
            return loss, log_vars

        model.parse_losses = parse_losses

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        norm = getattr(runner.optim_wrapper, "last_grad_norm", None)
        if norm is not None:
            self.rows.append((runner.iter + 1, norm))
            if len(self.rows) >= self.flush_rows:
                self.flush(runner)

    def flush(self, runner) -> None:
        live = runner.visualizer.get_backend("RunDVCLiveBackend")  # none on DDP ranks other than 0
        if live is not None:
            live.append_curve("grad_norm", self.rows)
        self.rows = []

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.flush(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.flush(runner)

    def after_train(self, runner) -> None:
        self.flush(runner)


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
    DVCLive backend, a progress bar, the gradient-health guard, the seed, and MMEngine's own logging kept quiet."""
    cuda = torch.cuda.is_available()
    guard = cfg.optim_wrapper.get("type", "OptimWrapper") == "OptimWrapper"  # AMP's loss scaler skips inf steps itself
    if guard:
        cfg.optim_wrapper.type = "GuardedOptimWrapper"
    cfg.default_hooks.checkpoint = dict(type="CheckpointHook", by_epoch=by_epoch, interval=checkpoint_interval,
                                        max_keep_ckpts=1, save_last=True)
    cfg.default_hooks.pop("visualization", None)  # draws nothing unless asked; the curves go through DVCLive
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), *hooks, dict(type=resume_hook), *([dict(type="GradientHealthHook")] if guard else []),
                        dict(type="ProgressBarHook", desc=f"{recipe.name} seed {seed}", enable=ctx.progress)]
    cfg.visualizer = dict(type=visualizer, vis_backends=[dict(type="RunDVCLiveBackend", save_dir=str(ctx.curves_dir),
                                                              init_kwargs=dict(resume=bool(ctx.resumed_from)))])
    cfg.update(work_dir=str(ctx.work_dir), experiment_name=f"{recipe.name}-seed{seed}-{uuid.uuid4().hex[:8]}",
               randomness=dict(seed=seed, deterministic=not cuda), resume=True, load_from=None, log_level=logging.WARNING)
    cfg.log_processor = dict(by_epoch=False)


def build(cfg, params: dict):
    """The Runner of `cfg`, with the run's parameters (published and effective values) logged to DVCLive."""
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.visualizer.get_backend("RunDVCLiveBackend").experiment.log_params(params)
    return runner


def test_time_augmentation(runner, cfg, pipeline, wrap) -> None:
    """Test through a TTA model: the test pipeline becomes `pipeline(old)`, the model `wrap(model)`."""
    loader = copy.deepcopy(cfg.test_dataloader)
    inner = inner_dataset(loader["dataset"])
    inner["pipeline"] = pipeline(inner["pipeline"])
    runner._test_dataloader = loader  # still a config: the test loop is built on first use
    runner.model = wrap(runner.model)


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


def train_and_test(runner, cfg, tricks: list, patch_test, keys) -> dict:
    """Train, then test with the test-time tricks; a refused step saves the weights it did not touch."""
    try:
        try:
            runner.train()
        except NonFiniteStep as e:
            runner.save_checkpoint(runner.work_dir, "last_good.pth")
            raise NonFiniteStep(f"{e}. Training stopped; the weights before this step are in "
                                f"{Path(runner.work_dir) / 'last_good.pth'} (the last periodic checkpoint is kept too)") from None
        patch_test(runner, cfg, tricks)
        metrics = runner.test_loop.run()  # not runner.test(): that would resume from the checkpoint again
    finally:
        stop_workers(runner)
        runner.visualizer.close()
    return {"test": {k: float(metrics[k]) for k in keys if k in metrics}}


def test_checkpoint(build_runner, recipe, checkpoint, patch_test):
    """`checkpoint` through the recipe's own test loop, test-time tricks applied, in a scratch work folder:
    (the test metrics, the test evaluator's first metric, which keeps the per-sample results)."""
    import tempfile

    from mmengine.runner import load_checkpoint

    from ..runs import RunContext

    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(recipe=recipe, seed=0, work_dir=Path(tmp) / "work", curves_dir=Path(tmp) / "curves", threads=None,
                         progress=False)
        runner, cfg = build_runner(recipe, 0, ctx)
        try:
            load_checkpoint(runner.model, str(checkpoint), map_location="cpu", strict=True)
            runner.call_hook("before_run")  # what runner.train() would have set up (log files, the EMA copy)
            patch_test(runner, cfg, recipe.config["tricks"])
            metrics = runner.test_loop.run()
        finally:
            stop_workers(runner)
            runner.visualizer.close()
    return metrics, runner.test_loop.evaluator.metrics[0]
