"""Text classification: fine-tuning on GLUE with Hugging Face Transformers' Trainer."""
from __future__ import annotations

from pathlib import Path

from ...schema import Component, Field, ListOf, Section, non_negative, positive
from .glue import DATASETS
from .models import MODELS

CORE_FILES = ("__init__.py", "engine.py", "tricks.py", "glue.py", "models.py")


def _fraction(v):
    return None if 0 <= v < 1 else f"must be in [0, 1), got {v!r}"


SCHEMA = {
    "dataset": Component(DATASETS, doc="GLUE task, prepared into datasets/<name>/; max_seq_length truncates"),
    "model": Component(MODELS, doc="`pretrained` checkpoint (Hub name or local folder) or `bert_random`"),
    "optim": Section({
        "name": Field(str, default="adamw", choices=["adamw"]),
        "lr": Field(float, check=positive),
        "weight_decay": Field(float, default=0.0, check=non_negative),
        "betas": ListOf(Field(float), default=[0.9, 0.999]),
        "eps": Field(float, default=1e-8, check=positive),
        "max_grad_norm": Field(float, default=1.0, check=non_negative, doc="clip the global gradient norm; 0 turns it off (Trainer's default 1.0)"),
    }),
    "schedule": Section({
        "epochs": Field(float, check=positive),
        "batch_size": Field(int, check=positive),
        "lr_schedule": Field(str, default="linear", choices=["linear", "constant", "cosine"], doc="after warmup; linear decays to 0 (run_glue)"),
        "warmup": Field(float, default=0.0, check=_fraction, doc="fraction of the steps with linear warmup from 0"),
    }),
    "eval": Section({
        "batch_size": Field(int, default=64, check=positive),
        "interval": Field(int, default=500, check=positive, doc="evaluate and log every N optimizer steps for the curves"),
    }),
    "amp": Field(bool, default=False, doc="fp16 mixed precision on a GPU (ignored on CPU)"),
    "checkpoint_interval": Field(int, default=500, check=positive, doc="optimizer steps between resumable checkpoints"),
}


class TextFamily:
    name = "text"
    distributed = True  # `devices: N`: the HF Trainer reads torchrun's environment (engine.py)
    tricks = frozenset({"cosine", "warmup", "label_smoothing", "ema", "no_bias_decay", "longer_schedule", "layer_decay", "reinit_top"})  # implemented in tricks.py
    schema = SCHEMA
    curves = ("loss",)  # DVCLive curves of every run that the pipeline plots per seed
    models = MODELS
    datasets = DATASETS

    def dataset_code(self, dataset: str) -> list[Path]:
        return [Path(__file__).with_name("glue.py")]

    def train_code(self, config: dict) -> list[Path]:
        return [Path(__file__).parent / f for f in CORE_FILES]

    def prepare(self, dataset: str, out_dir: Path) -> None:
        DATASETS.get(dataset)().prepare(out_dir)

    def check(self, config: dict, file) -> None:
        from ...errors import ConfigError
        from .tricks import check

        for key, registry in (("dataset", DATASETS), ("model", MODELS)):
            try:
                registry.build(config[key])
            except ValueError as e:
                raise ConfigError(file, key, str(e)) from None
        check(config, file)
        devices = config.get("devices", 1)
        if config["schedule"]["batch_size"] % devices:
            raise ConfigError(file, "devices", f"devices: {devices} does not divide schedule.batch_size "
                                               f"{config['schedule']['batch_size']} (the total batch over all devices)")

    def evaluate(self, recipe, checkpoint, out_dir):
        from .engine import evaluate

        return evaluate(recipe, checkpoint, out_dir)

    def render_samples(self, recipe, ids, titles, out):
        """The evaluation examples `ids`, decoded, as a Markdown list (text has no picture)."""
        from .checks import render_samples

        return render_samples(recipe, ids, titles, out)

    def train(self, recipe, seed, ctx) -> dict:
        from .engine import train

        return train(recipe, seed, ctx)

    def run_checks(self, recipe, seed, png) -> list:
        from .checks import run_checks

        return run_checks(recipe, seed, png)


FAMILY = TextFamily()
