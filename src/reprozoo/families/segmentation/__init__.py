"""Semantic segmentation on MMSegmentation: upstream configs taken as they are, run by MMEngine's Runner.

A recipe names an MMSegmentation config (`mmseg::unet/...py`, or a path) and changes only what must
change for this machine: the dataset location, the batch size on fewer devices (with the learning
rate scaled and both recorded), the schedule length, and any `overrides` (dotted config keys, each
checked against the config, so a typo is an error and not a silent no-op).
"""
from __future__ import annotations

from pathlib import Path

from ...schema import Component, Field, Section, positive
from ..openmmlab import config_ref_check
from .retina import DATASETS

CORE_FILES = ("__init__.py", "engine.py", "metrics.py", "tricks.py")


SCHEMA = {
    "config": Field(str, check=config_ref_check("mmseg"), doc="MMSegmentation config: 'mmseg::unet/<name>.py' (the installed model zoo) or a path"),
    "overrides": Field(dict, default={}, doc="dotted config keys and their new values (model.backbone.base_channels: 32); each key must exist"),
    "dataset": Component(DATASETS, doc="dataset, converted by MMSegmentation's own converter into datasets/<name>/"),
    "schedule": Section({
        "iters": Field(int, check=positive, doc="optimizer steps; the poly schedule ends here"),
        "batch_size": Field(int, check=positive, doc="images per step on the one device used"),
        "reference_batch_size": Field(int, check=positive, doc="total batch of the published run (GPUs x images per GPU)"),
        "lr_scaling": Field(str, default="linear", choices=["linear", "none"],
                            doc="linear: lr x batch_size / reference_batch_size (Goyal et al. 2017); none: the config's lr"),
        "num_workers": Field(int, default=2, check=positive,
                             doc="loader processes; augmentation runs there, seeded from the run's seed, so a resumed run replays the same crops"),
    }),
    "eval": Section({
        "interval": Field(int, default=4000, check=positive, doc="validate every N iterations for the curves"),
    }),
    "amp": Field(bool, default=False, doc="mixed precision (AmpOptimWrapper) on a GPU; ignored on CPU"),
    "checkpoint_interval": Field(int, default=4000, check=positive, doc="iterations between resumable checkpoints"),
}


class SegmentationFamily:
    name = "segmentation"
    distributed = False  # trains on one device
    tricks = frozenset({"ema", "longer_schedule", "hflip_tta", "dice_loss"})  # implemented in tricks.py
    schema = SCHEMA
    curves = ("loss",)  # DVCLive curves of every run that the pipeline plots per seed
    models = None  # the model is the config's: `reprozoo list` shows configs, not a registry
    datasets = DATASETS

    def dataset_code(self, dataset: str) -> list[Path]:
        return [Path(__file__).with_name("retina.py")]

    def train_code(self, config: dict) -> list[Path]:
        files = [Path(__file__).parent / f for f in CORE_FILES] + [Path(__file__).parent.with_name("openmmlab.py")]
        if not config["config"].startswith("mmseg::"):
            files.append(Path(config["config"]))
        return files

    def prepare(self, dataset: str, out_dir: Path) -> None:
        DATASETS.get(dataset)().prepare(out_dir)

    def check(self, config: dict, file) -> None:
        """The config must load, every override key must exist in it, and the tricks must change something."""
        from ...errors import ConfigError
        from ..openmmlab import check_overrides, load_config
        from .engine import check_dataset
        from .tricks import check

        try:
            DATASETS.build(config["dataset"])
        except ValueError as e:
            raise ConfigError(file, "dataset", str(e)) from None
        cfg = load_config(config["config"], file)
        cfg.merge_from_dict(check_overrides(cfg, config["overrides"], file), allow_list_keys=True)
        check_dataset(cfg, config["dataset"]["name"], file)
        check(config, cfg, file)

    def evaluate(self, recipe, checkpoint, out_dir):
        from .engine import evaluate

        return evaluate(recipe, checkpoint, out_dir)

    def render_samples(self, recipe, ids, titles, out):
        from ..openmmlab_checks import render_images

        return render_images(recipe, ids, titles, out)

    def train(self, recipe, seed, ctx) -> dict:
        from .engine import train

        return train(recipe, seed, ctx)

    def run_checks(self, recipe, seed, png) -> list:
        from .checks import run_checks

        return run_checks(recipe, seed, png)


FAMILY = SegmentationFamily()
