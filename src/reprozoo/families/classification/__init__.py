"""Image/sequence classification on MMEngine's Runner (MNIST-1D first; CIFAR and MNIST next)."""
from __future__ import annotations

from pathlib import Path

from ...schema import Component, Field, ListOf, Section, between, non_negative, positive
from . import zoo
from .datasets import DATASETS, VAL_FRACTION, VAL_SEED
from .models import MODELS

zoo.load_all()
CORE_FILES = ("__init__.py", "engine.py", "tricks.py", "models.py", "datasets.py", "zoo/__init__.py")

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}

SCHEMA = {
    "dataset": Component(DATASETS, doc="dataset, prepared into datasets/<name>/"),
    "model": Component(MODELS, doc="network and its constructor arguments"),
    "optim": Section({
        "name": Field(str, choices=list(OPTIMIZERS)),
        "lr": Field(float, check=positive),
        "weight_decay": Field(float, default=0.0, check=non_negative),
        "momentum": Field(float, default=0.9, check=non_negative, doc="SGD only"),
        "nesterov": Field(bool, default=False, doc="SGD only"),
        "betas": ListOf(Field(float), default=[0.9, 0.999], doc="Adam/AdamW only"),
    }),
    "schedule": Section({
        "iters": Field(int, check=positive, doc="optimizer steps"),
        "batch_size": Field(int, check=positive),
        "shuffle": Field(bool, default=True, doc="reshuffle every pass; false walks the set in order"),
        "lr_schedule": Field(str, default="constant", choices=["constant", "multistep", "cosine"]),
        "milestones": ListOf(Field(int), doc="multistep: iterations where lr is multiplied by gamma"),
        "gamma": Field(float, default=0.1, check=positive),
        "warmup_iters": Field(int, default=0, check=non_negative),
        "warmup_factor": Field(float, default=0.1, check=positive, doc="lr multiplier at the first warmup step"),
    }),
    "eval": Section({
        "split": Field(str, default="test", choices=["test", "val"],
                       doc="val: a stratified hold-out of the training set (the rest trains); studies decide on it"),
        "val_fraction": Field(float, default=VAL_FRACTION, check=between(0, 1, lo_open=True, hi_open=True), omit_default=True,
                              doc="split val: the share of the training set held out"),
        "val_seed": Field(int, default=VAL_SEED, check=non_negative, omit_default=True,
                          doc="split val: the hold-out's seed (not the run's: every seed and trial sees the same split)"),
        "interval": Field(int, default=250, check=positive, doc="evaluate every N iterations for the curves"),
        "batch_size": Field(int, default=1000, check=positive),
    }),
    "checkpoint_interval": Field(int, default=1000, check=positive),
    "speed": Section({
        "data_on_device": Field(bool, default=True, doc="keep the dataset as one tensor on the training device and "
                                "crop/flip batches there; false gathers batches on the CPU and copies each one"),
        "channels_last": Field(str, default="auto", choices=["auto", "on", "off"],
                               doc="NHWC memory format for images and the network; auto: on a GPU only"),
        "amp": Field(str, default="auto", choices=["auto", "on", "off"],
                     doc="bfloat16 autocast of the network (loss in float32, no loss scaling needed); auto: on a GPU only"),
        "seed_block": Field(int, default=1, check=between(1, 64),
                            doc="train seeds in fixed blocks of this many (0-4, 5-9, ... for 5) as one stacked model "
                                "(torch.func.vmap, batched.py); 1: one seed per process on MMEngine's Runner"),
    }),
}


def _check_schedule(s: dict, file) -> None:
    """Schedules MMEngine would accept but run wrongly: a 1-iteration LinearLR warmup never reaches the full
    learning rate, a warmup as long as the run never ends, a milestone outside the run never fires."""
    from ...errors import ConfigError

    if s["warmup_iters"] == 1 or s["warmup_iters"] >= s["iters"]:
        raise ConfigError(file, "schedule.warmup_iters", f"must be 0 or in 2..{s['iters'] - 1} (iters), got {s['warmup_iters']}: "
                                                         "a 1-step LinearLR stays at warmup_factor x lr for the whole run")
    if s["lr_schedule"] != "multistep" and s["milestones"]:
        raise ConfigError(file, "schedule.milestones", f"only lr_schedule: multistep uses milestones (here {s['lr_schedule']!r})")
    if s["lr_schedule"] == "multistep" and (not s["milestones"] or sorted(set(s["milestones"])) != s["milestones"]
                                            or not 0 < s["milestones"][0] <= s["milestones"][-1] < s["iters"]):
        raise ConfigError(file, "schedule.milestones", f"expected increasing iterations in 1..{s['iters'] - 1}, got {s['milestones']}")


class ClassificationFamily:
    name = "classification"
    distributed = True  # `devices: N`: MMEngine's Runner under torchrun (engine.py)
    tricks = frozenset({"cosine", "warmup", "label_smoothing", "mixup", "cutmix", "random_erasing", "cutout", "ema", "no_bias_decay",
                        "zero_init_residual", "clip_grad", "longer_schedule", "hflip_tta", "trivialaugment", "autoaugment"})  # implemented in tricks.py
    schema = SCHEMA
    curves = ("loss", "accuracy")  # DVCLive curves of every run that the pipeline plots per seed
    models = MODELS
    datasets = DATASETS

    def dataset_code(self, dataset: str) -> list[Path]:
        """The files that define how `dataset` is prepared: what its prepare stage depends on."""
        return [Path(__file__).with_name("datasets.py"), _module_file(DATASETS.get(dataset))]

    def train_code(self, config: dict) -> list[Path]:
        """The family files a run of `config` executes: the shared engine plus its model's and dataset's modules."""
        files = [Path(__file__).parent / f for f in CORE_FILES] + [Path(__file__).parent.with_name("openmmlab.py")]
        if config.get("speed", {}).get("seed_block", 1) > 1:
            files += [Path(__file__).with_name("batched.py"), Path(__file__).with_name("stacked_ops.py")]
        for f in (_module_file(MODELS.get(config["model"]["name"])), _module_file(DATASETS.get(config["dataset"]["name"]))):
            if f not in files:
                files.append(f)
        return files

    def prepare(self, dataset: str, out_dir: Path) -> None:
        DATASETS.get(dataset)().prepare(out_dir)  # preparing takes no options: they apply when loading

    def check(self, config: dict, file) -> None:
        """Reject tricks that this recipe's model or dataset cannot take, or that change nothing."""
        from ...errors import ConfigError
        from .tricks import check

        for key, registry in (("dataset", DATASETS), ("model", MODELS)):
            try:  # constructors reject values the schema cannot express (a ResNet depth that is not 6n+2)
                registry.build(config[key]) if key == "dataset" else _check_model_args(config[key])
            except ValueError as e:
                raise ConfigError(file, key, str(e)) from None
        _check_schedule(config["schedule"], file)
        extra = [k for k in ("val_fraction", "val_seed") if k in config["eval"]]
        if extra and config["eval"]["split"] != "val":
            raise ConfigError(file, f"eval.{extra[0]}", "only eval.split: val holds data out", ["split: val"])
        check(config, file)
        from .batched import check as check_batched

        check_batched(config, file)
        devices = config.get("devices", 1)
        if devices > 1 and config["speed"]["seed_block"] > 1:
            raise ConfigError(file, "devices", f"devices: {devices} trains one seed on several devices; "
                                               "it needs speed.seed_block: 1", [1])
        if config["schedule"]["batch_size"] % devices:
            raise ConfigError(file, "devices", f"devices: {devices} does not divide schedule.batch_size "
                                               f"{config['schedule']['batch_size']} (the total batch over all devices)")

    def evaluate(self, recipe, checkpoint, out_dir):
        from .engine import evaluate

        return evaluate(recipe, checkpoint, out_dir)

    def render_samples(self, recipe, ids, titles, out):
        """The evaluation samples `ids` as a grid: signals as lines, images as pictures."""
        from .checks import render_samples

        return render_samples(recipe, ids, titles, out)

    def train(self, recipe, seed, ctx) -> dict:
        from .engine import train

        return train(recipe, seed, ctx)

    def train_block(self, recipe, seeds, ctxs, work) -> list[dict]:
        """Train `seeds` together (`speed.seed_block`); each seed's {"metrics", "train_seconds"}."""
        from .batched import train

        return train(recipe, seeds, ctxs, work, progress=ctxs[0].progress)

    def run_checks(self, recipe, seed, png) -> list:
        from .checks import run_checks

        return run_checks(recipe, seed, png)


def _check_model_args(spec: dict) -> None:
    """Models may declare `check_args(**kwargs)` to validate arguments without building the network."""
    cls = MODELS.get(spec["name"])
    if hasattr(cls, "check_args"):
        cls.check_args(**{k: v for k, v in spec.items() if k != "name"})


def _module_file(obj) -> Path:
    import sys

    return Path(sys.modules[obj.__module__].__file__)


FAMILY = ClassificationFamily()
