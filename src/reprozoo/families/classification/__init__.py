"""Image/sequence classification on MMEngine's Runner (MNIST-1D first; CIFAR and MNIST next)."""
from __future__ import annotations

from pathlib import Path

from ...schema import Component, Field, ListOf, Section, non_negative, positive
from .datasets import DATASETS
from .models import MODELS

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
        "split": Field(str, default="test", choices=["test"]),
        "interval": Field(int, default=250, check=positive, doc="evaluate every N iterations for the curves"),
        "batch_size": Field(int, default=1000, check=positive),
    }),
    "checkpoint_interval": Field(int, default=1000, check=positive),
}


class ClassificationFamily:
    name = "classification"
    schema = SCHEMA
    models = MODELS
    datasets = DATASETS

    def prepare(self, dataset: str, out_dir: Path) -> None:
        DATASETS.get(dataset)().prepare(out_dir)

    def check(self, config: dict, file) -> None:
        """Reject tricks that this recipe's model or dataset cannot take, or that change nothing."""
        from .tricks import check

        check(config, file)

    def train(self, recipe, seed, ctx) -> dict:
        from .engine import train

        return train(recipe, seed, ctx)


FAMILY = ClassificationFamily()
