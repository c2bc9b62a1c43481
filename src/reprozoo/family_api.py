"""The contract between the core and a task family (`reprozoo/families/<name>/`).

A family module exposes `FAMILY`, an object that satisfies `Family`; `tests/test_family_contract.py`
checks every family against it, down to evaluating a checkpoint trained in the test. The core talks
to a family only through these members, and names no family itself: what a family supports (its
tricks, DDP, seed blocks) it declares here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .checks import Check  # noqa: F401  (part of the contract: what `run_checks` returns)
from .runs import RunContext  # noqa: F401  (part of the contract: what `train` receives)


@dataclass
class EvalResult:
    """A checkpoint's score on a recipe's evaluation split, as `Family.evaluate` returns it.

    `correct` is set when the headline metric is a proportion of `total` samples (top-1 accuracy): the
    verdict then uses the exact binomial interval. Otherwise `bootstrap` may hold a percentile interval
    over the evaluated samples (`{"replicates", "ci_low", "ci_high"}`) when they are a subset of the set
    the published number comes from. `predictions` is the per-sample file the evaluation wrote."""

    split: str
    total: int
    metric: str
    value: float
    correct: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    subset: bool = False
    bootstrap: dict | None = None
    predictions: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["predictions"] = None if self.predictions is None else str(self.predictions)
        return d


@runtime_checkable
class Family(Protocol):
    """What every family implements. `schema`: the recipe sections it understands (`reprozoo.schema`);
    `models`/`datasets`: registries (`models` None where recipes name framework configs); `tricks`:
    the names of the `reprozoo.tricks` it implements; `distributed`: whether `devices: N` may run it
    under torchrun; `curves`: the DVCLive curves every run logs that pipelines plot per seed."""

    name: str
    schema: dict
    models: Any
    datasets: Any
    tricks: frozenset[str]
    distributed: bool
    curves: tuple[str, ...]

    def dataset_code(self, dataset: str) -> list[Path]:
        """The files that define how `dataset` is prepared (its prepare stage's dependencies)."""

    def train_code(self, config: dict) -> list[Path]:
        """The family files a run of `config` executes (its train stage's dependencies)."""

    def prepare(self, dataset: str, out_dir: Path) -> None:
        """Prepare `dataset` into `out_dir` (real file formats; no download where a local path is given)."""

    def check(self, config: dict, file) -> None:
        """Recipe checks beyond the schema; a ConfigError naming `file` and the key."""

    def train(self, recipe, seed: int, ctx: RunContext) -> dict[str, dict[str, float]]:
        """Train one seed; return {split: {metric: value}} and write the final evaluation's per-sample
        predictions (`predictions.*`) into `ctx.outputs`."""

    def evaluate(self, recipe, checkpoint: Path, out_dir: Path) -> EvalResult:
        """Score `checkpoint` (already opened weights-only by the core) on the recipe's evaluation split
        through the recipe's own test pipeline; write the predictions into `out_dir`."""

    def run_checks(self, recipe, seed: int, png: Path | None) -> list:
        """The family's sanity checks (`reprozoo check`): a list of `reprozoo.checks.Check`."""

    def render_samples(self, recipe, ids: list[int], titles: list[str], out: Path) -> Path:
        """Draw (or, for text, write out) the evaluation samples `ids` for `reprozoo errors`; the file written."""
