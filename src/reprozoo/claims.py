"""Claims: published numbers, one YAML file per baseline under `baselines/`.

A claim says which recipe reproduces it, on which metric and split, the published value (with its
std and number of runs when the source gives them), how close counts as equal (`tolerance`), and
where the number comes from. A claim without a source is rejected.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths, yamlfile
from .errors import ConfigError
from .schema import Field, ListOf, Section, non_negative, positive

SOURCE_KEYS = {"paper", "table", "repo", "path", "commit", "url", "notes"}


class SourceField:
    """A source is `{paper, table}` or `{repo, path, commit}` (plus optional url, notes)."""

    default = None

    def validate(self, value, file, key):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a mapping, got {value!r}", SOURCE_KEYS)
        unknown = set(value) - SOURCE_KEYS
        if unknown:
            raise ConfigError(file, f"{key}.{sorted(unknown)[0]}", "unknown key", SOURCE_KEYS)
        for k, v in value.items():
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(file, f"{key}.{k}", f"expected a non-empty string, got {v!r}")
        if not ({"paper", "table"} <= set(value) or {"repo", "path", "commit"} <= set(value)):
            raise ConfigError(file, key, "a source needs `paper` and `table`, or `repo`, `path` and `commit`")
        return dict(value)


CLAIM_FIELDS = {
    "recipe": Field(str, doc="recipe whose runs are compared with this claim"),
    "metric": Field(str, default=None, doc="metric key in the runs' metrics.json"),
    "split": Field(str, default=None, doc="evaluation split, e.g. test, val, dev"),
    "value": Field(float, doc="the published number"),
    "std": Field(float, default=None, check=non_negative, doc="published std over runs, if given"),
    "n": Field(int, default=None, check=positive, doc="number of runs behind the published value"),
    "tolerance": Field(float, default=None, check=non_negative, doc="differences within ±tolerance count as equal (e.g. rounding)"),
    "margin": Field(float, default=None, check=positive, doc="how much wider than ±tolerance the interval may be for `reproduced`"),
    "source": SourceField(),
    "notes": Field(str, default=""),
}
DEFAULT_KEYS = ("metric", "split", "tolerance", "margin")
FILE_SCHEMA = Section({
    "title": Field(str),
    "description": Field(str, default=""),
    "source": SourceField(),
    "defaults": Section({k: CLAIM_FIELDS[k] for k in DEFAULT_KEYS}),
    "claims": ListOf(Section(CLAIM_FIELDS)),
})
FALLBACK = {"tolerance": 0.0, "margin": 2.0}


@dataclass(frozen=True)
class Claim:
    baseline: str
    recipe: str
    metric: str
    split: str
    value: float
    std: float | None
    n: int | None
    tolerance: float
    margin: float
    source: dict[str, str]
    notes: str
    with_split: bool = False  # the same recipe and metric is claimed on several splits

    @property
    def label(self) -> str:
        return f"{self.recipe}:{self.metric}" + (f"@{self.split}" if self.with_split else "")


@dataclass(frozen=True)
class Baseline:
    name: str
    path: Path
    title: str
    description: str
    claims: tuple[Claim, ...]
    # from the baseline's params.yaml section (`pipeline.load_baseline_params`); None/empty without one
    seeds: tuple[int, ...] | None = None
    extra_recipes: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()

    @property
    def recipes(self) -> list[str]:
        """The claimed recipes."""
        return list(dict.fromkeys(c.recipe for c in self.claims))

    @property
    def all_recipes(self) -> list[str]:
        """Every recipe the baseline's pipeline trains: the claimed ones, then params.yaml's extra ones."""
        return self.recipes + [r for r in self.extra_recipes if r not in self.recipes]


def load_baseline(ref: str | Path, known_recipes=None) -> Baseline:
    if not str(ref).endswith(".yaml") and ("/" in str(ref) or str(ref).startswith(".")):
        raise ConfigError(ref, None, "a baseline is named by its claims file's name under baselines/ (or a .yaml path)", list_baselines())
    path = Path(ref) if str(ref).endswith(".yaml") else paths.baselines_dir() / f"{ref}.yaml"
    if not path.exists():
        raise ConfigError(path, None, "no such claims file", list_baselines())
    raw = yamlfile.load(path, "claims")
    data = FILE_SCHEMA.validate(raw, path, "")
    claims = []
    for i, c in enumerate(data["claims"]):
        key = f"claims[{i}]"
        for k in DEFAULT_KEYS:
            if c[k] is None:
                c[k] = data["defaults"][k] if data["defaults"][k] is not None else FALLBACK.get(k)
            if c[k] is None:
                raise ConfigError(path, f"{key}.{k}", "missing (set it on the claim or under `defaults`)")
        source = c["source"] or data["source"]
        if source is None:
            raise ConfigError(path, f"{key}.source", "a claim needs a source (paper + table, or repo + path + commit), on the claim or at the top of the file")
        if known_recipes is not None and c["recipe"] not in known_recipes:
            raise ConfigError(path, f"{key}.recipe", f"unknown recipe {c['recipe']!r}", known_recipes)
        claims.append(Claim(baseline=path.stem, recipe=c["recipe"], metric=c["metric"], split=c["split"],
                            value=c["value"], std=c["std"], n=c["n"], tolerance=c["tolerance"], margin=c["margin"],
                            source=source, notes=c["notes"]))
    pairs = [(c.recipe, c.metric) for c in claims]
    claims = [dataclasses.replace(c, with_split=pairs.count((c.recipe, c.metric)) > 1) for c in claims]
    labels = [c.label for c in claims]
    for i, c in enumerate(claims):
        if labels.index(c.label) != i:
            raise ConfigError(path, f"claims[{i}]", f"claim {c.recipe}:{c.metric} on split {c.split!r} is listed twice")
    return Baseline(name=path.stem, path=path, title=data["title"], description=data["description"], claims=tuple(claims))


def list_baselines() -> list[str]:
    return sorted(p.stem for p in paths.baselines_dir().glob("*.yaml"))


def format_source(src: dict[str, Any]) -> str:
    parts = []
    if "paper" in src:
        parts.append(src["paper"] + (f", {src['table']}" if "table" in src else ""))
    if "repo" in src:
        parts.append(f"{src['repo']}/{src['path']}@{src['commit'][:10]}")
    return "; ".join(parts)
