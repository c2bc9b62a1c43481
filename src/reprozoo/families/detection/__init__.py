"""Object detection on MMDetection: upstream configs taken as they are, run by MMEngine's Runner.

A recipe names an MMDetection config (`mmdet::faster_rcnn/...py`, or a path) and changes only what
must change: the dataset location (a set with its own classes also resizes the box heads), the
batch size on fewer devices (with the learning rate scaled and both recorded), the schedule length,
where the backbone's ImageNet weights come from, and any `overrides` (dotted config keys, each
checked against the config).
"""
from __future__ import annotations

from pathlib import Path

from ...schema import Component, Field, Section, positive
from ..openmmlab import config_ref_check
from .data import DATASETS

CORE_FILES = ("__init__.py", "engine.py", "metrics.py", "tricks.py")


def _weights(v):
    return None if v in ("zoo", "none") or v.endswith((".pth", ".pt", ".th")) else \
        f"expected 'zoo' (the config's ImageNet weights), 'none' (from scratch) or a path to a .pth file, got {v!r}"


SCHEMA = {
    "config": Field(str, check=config_ref_check("mmdet"), doc="MMDetection config: 'mmdet::faster_rcnn/<name>.py' (the installed model zoo) or a path"),
    "overrides": Field(dict, default={}, doc="dotted config keys and their new values (model.rpn_head.feat_channels: 128); each key must exist"),
    "dataset": Component(DATASETS, doc="COCO-format dataset prepared into datasets/<name>/"),
    "backbone_weights": Field(str, default="zoo", check=_weights,
                              doc="zoo: the config's ImageNet weights (torch hub cache, <data root>/checkpoints/, else downloaded); "
                                  "a local .pth file; none: from scratch (recorded as a warning in the run)"),
    "schedule": Section({
        "epochs": Field(int, default=None, nullable=True, check=positive, doc="training epochs (default: the config's); the step milestones scale with them"),
        "batch_size": Field(int, check=positive, doc="images per step on the one device used"),
        "reference_batch_size": Field(int, check=positive, doc="total batch of the published run (GPUs x images per GPU)"),
        "lr_scaling": Field(str, default="linear", choices=["linear", "none"],
                            doc="linear: lr x batch_size / reference_batch_size (Goyal et al. 2017); none: the config's lr"),
        "num_workers": Field(int, default=2, check=positive, doc="loader processes; augmentation runs there, seeded from the run's seed"),
    }),
    "eval": Section({
        "interval": Field(int, default=1, check=positive, doc="validate every N epochs for the curves"),
    }),
    "log_interval": Field(int, default=50, check=positive, doc="iterations between logged training losses"),
    "amp": Field(bool, default=False, doc="mixed precision (AmpOptimWrapper) on a GPU; ignored on CPU"),
    "checkpoint_interval": Field(int, default=1, check=positive, doc="epochs between resumable checkpoints"),
}


class DetectionFamily:
    name = "detection"
    distributed = False  # trains on one device
    tricks = frozenset({"ema", "longer_schedule", "hflip_tta", "giou_loss", "multiscale_train"})  # implemented in tricks.py
    schema = SCHEMA
    curves = ("loss",)  # DVCLive curves of every run that the pipeline plots per seed
    models = None  # the model is the config's: `reprozoo list` shows configs, not a registry
    datasets = DATASETS

    def dataset_code(self, dataset: str) -> list[Path]:
        return [Path(__file__).with_name("data.py")]

    def train_code(self, config: dict) -> list[Path]:
        files = [Path(__file__).parent / f for f in CORE_FILES] + [Path(__file__).parent.with_name("openmmlab.py")]
        if not config["config"].startswith("mmdet::"):
            files.append(Path(config["config"]))
        return files

    def prepare(self, dataset: str, out_dir: Path) -> None:
        DATASETS.get(dataset)().prepare(out_dir)

    def check(self, config: dict, file) -> None:
        """The config must load, every override key must exist in it, and the tricks must change something."""
        import mmdet.utils

        from ... import paths
        from ...errors import ConfigError
        from .engine import WEIGHTS_CHOICES, check_dataset, load
        from .tricks import check

        mmdet.utils.register_all_modules(init_default_scope=False)
        try:
            DATASETS.build(config["dataset"])
        except ValueError as e:
            raise ConfigError(file, "dataset", str(e)) from None
        w = config["backbone_weights"]
        if w not in ("zoo", "none") and not (Path(w) if Path(w).is_absolute() else paths.project_root() / w).is_file():
            raise ConfigError(file, "backbone_weights", f"no checkpoint file {w}", WEIGHTS_CHOICES)
        cfg = load(config, file)
        check_dataset(cfg, config["dataset"]["name"], file)
        check(config, cfg, file)

    def evaluate(self, recipe, checkpoint, out_dir):
        from .engine import evaluate

        return evaluate(recipe, checkpoint, out_dir)

    def render_samples(self, recipe, ids, titles, out):
        """The evaluation images with COCO image ids `ids` (looked up in the prepared annotation files)."""
        import json

        from ...datasets_store import ensure_prepared
        from ..openmmlab_checks import render_images

        names = {}
        for f in ensure_prepared(self.name, recipe.config["dataset"]["name"]).rglob("*.json"):
            data = json.loads(f.read_text())
            if isinstance(data, dict) and "val" in str(f) and isinstance(data.get("images"), list):
                names.update({im["id"]: im["file_name"] for im in data["images"]})
        return render_images(recipe, [names.get(int(i), str(i)) for i in ids], titles, out)

    def train(self, recipe, seed, ctx) -> dict:
        from .engine import train

        return train(recipe, seed, ctx)

    def run_checks(self, recipe, seed, png) -> list:
        from .checks import run_checks

        return run_checks(recipe, seed, png)


FAMILY = DetectionFamily()
