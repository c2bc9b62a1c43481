"""MMEngine pieces shared by the vision families: DVCLive logging, progress, exact resume."""
from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, LOOPS, VISBACKENDS
from mmengine.runner import IterBasedTrainLoop
from mmengine.visualization import DVCLiveVisBackend
from tqdm import tqdm


@VISBACKENDS.register_module()
class RunDVCLiveBackend(DVCLiveVisBackend):
    """mmengine's DVCLive backend without its side effects on the repository.

    Upstream runs `dvc init -f --no-scm` in the working directory when git has no user identity
    (as on a fresh CI machine), lets DVCLive edit `dvc.yaml`, and caches artifacts with DVC on
    close. Inside a `dvc repro` stage all three would rewrite the project, so here DVCLive only
    writes its own directory.
    """

    def _init_env(self):
        from dvclive import Live

        kwargs = dict(dir=self._save_dir, report=None, save_dvc_exp=False, dvcyaml=None, monitor_system=False)
        kwargs.update(self._init_kwargs or {})
        self._dvclive = Live(**kwargs)

    def add_config(self, config, **kwargs) -> None:
        """The resolved recipe is stored with the run; the framework config holds live objects."""

    def close(self) -> None:
        if hasattr(self, "_dvclive"):
            self._dvclive.end()

    def append_curve(self, name: str, rows: list[tuple[int, float]]) -> None:
        """Append many (step, value) rows to the curve `name` at once (see `append_curve`)."""
        append_curve(self._save_dir, name, rows)


def append_curve(curves_dir, name: str, rows: list[tuple[int, float]]) -> None:
    """Append (step, value) rows to `<curves_dir>/plots/metrics/<name>.tsv` in DVCLive's format, in one
    write: DVCLive's `log_metric` opens the file and makes its folders for every row, which costs a
    few percent of a small model's step when it runs every step."""
    if not rows:
        return
    tsv = Path(curves_dir) / "plots" / "metrics" / f"{name}.tsv"
    tsv.parent.mkdir(parents=True, exist_ok=True)
    new = not tsv.exists()
    with open(tsv, "a") as f:
        f.write((f"step\t{name}\n" if new else "") + "".join(f"{step}\t{float(v)!r}\n" for step, v in rows))


@LOOPS.register_module()
class IterTrainLoop(IterBasedTrainLoop):
    """MMEngine's `IterBasedTrainLoop`, except that it puts the model in training mode once and again
    after each validation, not before every iteration: `model.train()` walks every submodule, about 1%
    of a LeNet-5 step. (No hook of ours switches the model to eval mode inside an iteration.)"""

    def run(self):
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        for _ in range(self._iter):  # a resumed run skips the batches it has trained on
            next(self.dataloader_iterator)
        self.runner.model.train()
        while self._iter < self._max_iters and not self.stop_training:
            self.run_iter(next(self.dataloader_iterator))
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                self.runner.val_loop.run()
                self.runner.model.train()
        self.runner.call_hook("after_train_epoch")
        self.runner.call_hook("after_train")
        return self.runner.model


@HOOKS.register_module()
class ProgressBarHook(Hook):
    """A tqdm bar over training iterations that starts where a resumed run left off."""

    priority = "VERY_LOW"

    def __init__(self, desc: str = "train", enable: bool = True):
        self.desc, self.enable, self.bar = desc, enable, None

    def before_train(self, runner) -> None:
        self.bar = tqdm(total=runner.max_iters, initial=runner.iter, desc=self.desc, disable=not self.enable,
                        mininterval=1.0, dynamic_ncols=True, unit="it")

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.bar.update(1)
        if outputs and runner.iter % 50 == 0:
            self.bar.set_postfix(loss=f"{outputs['loss'].item():.4f}", refresh=False)

    def after_train(self, runner) -> None:
        self.bar.close()


@HOOKS.register_module()
class ResumeStateHook(Hook):
    """Makes a resumed run continue exactly like an uninterrupted one, from a weights-only checkpoint.

    - Stores the global RNG states and restores them on resume (mmengine only re-seeds), so random
      augmentation and dropout stay on the uninterrupted stream.
    - Stores the message hub's history buffers as plain lists: as numpy objects they need
      `builtins.getattr` allowlisted for `torch.load(weights_only=True)`, which would defeat it.
    - Re-runs the validation due at the resumed iteration: the checkpoint is written before that
      validation, so a run killed in between would otherwise miss it (`truncate_curves` drops it).
    """

    def before_train(self, runner) -> None:
        loop, it = runner.train_loop, runner.iter
        if it > 0 and runner.val_loop is not None and it >= loop.val_begin and (it % loop.val_interval == 0 or it == loop.max_iters):
            runner.val_loop.run()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["rng_state"] = {
            "python": random.getstate(),
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        hub = checkpoint.get("message_hub")
        if hub:
            hub["log_scalars"] = {k: {"log": _plain(v._log_history), "count": _plain(v._count_history), "max_length": v.max_length}
                                  for k, v in hub["log_scalars"].items()}
            hub["runtime_info"] = {k: _plain(v) for k, v in hub["runtime_info"].items()}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        from mmengine.logging import HistoryBuffer

        hub = checkpoint.get("message_hub")
        if hub:
            hub["log_scalars"] = {k: HistoryBuffer(v["log"], v["count"], v["max_length"]) if isinstance(v, dict) else v
                                  for k, v in hub["log_scalars"].items()}
        state = checkpoint.get("rng_state")
        if not state:
            return
        random.setstate(_tuplify(state["python"]))
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _plain(x):
    """numpy arrays and scalars -> Python lists and numbers (recursively)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def _tuplify(x):
    return tuple(_tuplify(i) for i in x) if isinstance(x, (list, tuple)) else x


def last_checkpoint_iter(work_dir: Path) -> int:
    """Iteration of the checkpoint mmengine will resume from (0 when there is none)."""
    marker = Path(work_dir) / "last_checkpoint"
    if not marker.exists():
        return 0
    m = re.search(r"iter_(\d+)\.pth$", marker.read_text().strip())
    return int(m.group(1)) if m and Path(marker.read_text().strip()).exists() else 0


def truncate_curves(curves_dir: Path, last_step: int, val_keys=()) -> None:
    """Drop DVCLive rows logged after `last_step`, so a resumed run appends without duplicates; for the
    validation metrics (`val_keys`) also the row at `last_step`, which the resumed run logs again."""
    for tsv in Path(curves_dir).glob("plots/metrics/**/*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
            fields = rows[0].keys() if rows else None
        if fields is None:
            continue
        limit = last_step - 1 if tsv.stem in val_keys else last_step
        keep = [r for r in rows if int(r["step"]) <= limit]
        with open(tsv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(fields), delimiter="\t", lineterminator="\n")  # as DVCLive writes
            w.writeheader()
            w.writerows(keep)


def use_weights_only_loading() -> None:
    """mmengine 0.10 calls `torch.load` without `weights_only`, and torch >= 2.6 then refuses its
    checkpoints. Ask for `weights_only=True` explicitly: with `ResumeStateHook` our checkpoints hold
    only tensors and plain Python types, so no unsafe global needs allowing."""
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_from_local(filename, map_location):
        return torch.load(Path(filename).expanduser(), map_location=map_location, weights_only=True)

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local, force=True)
