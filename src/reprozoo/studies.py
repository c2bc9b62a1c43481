"""Studies: the tuning playbook as data. Before deciding whether a change helps, tune the parameters
that interact with it (the nuisance ones, above all the learning rate) separately for each value of
the parameter studied (the scientific one), decide on a validation split, look at the axis plots,
then confirm the best setting of each value with several seeds on the test set.

    recipes/studies/<spec>.yaml                       the spec (docs/studies.md)
    pipelines/studies/<spec>/trials/<trial>.yaml      one generated recipe per (scientific value, trial)
    pipelines/studies/<spec>/<spec>--<value>--best.yaml  the best trial of a value (written by `select`)
    pipelines/studies/<spec>/dvc.yaml                 trials, select, confirmation runs, report
    reports/studies/<spec>_trials.json, <spec>.{md,csv,json}, <spec>_axis.png, <spec>_isolation.png

Trials are ordinary runs (one seed, `eval.split: val`); the quasi-random points come from
`scipy.stats.qmc` (scrambled Sobol or Halton, seeded), the same points for every scientific value.
A spec whose scientific parameter is `recipe` and that has no nuisance search is a plain comparison
of recipes (`reprozoo versus`): no trials, the recipes' own runs are the confirmation.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import paths, yamlfile
from .errors import ConfigError
from .io import atomic_write_text, read_json, write_json
from .recipes import NAME, _merge, load_recipe, recipe_names, validate_recipe
from .schema import Field, ListOf, Section, between, non_negative

SAMPLERS = ["sobol", "halton", "random"]
EXPLOIT = Section({"sampler": Field(str, choices=["tpe"]), "trials": Field(int, check=between(1, 4096))})
KINDS = ["log", "linear", "int", "choice"]
SPECIAL = ("tricks", "recipe")  # scientific parameters that are not a recipe key

SPEC = Section({
    "question": Field(str, doc="the question, in one sentence"),
    "base": Field(str, choices=recipe_names, doc="the recipe every trial starts from"),
    "scientific": Field(dict, doc="{KEY: [values]}: a recipe key (dotted), `tricks` (trick sets) or `recipe` (names)"),
    "nuisance": Field(dict, default=None, doc="{KEY: {log|linear|int: [lo, hi]} or {choice: [...]}}, tuned per value"),
    "fixed": Field(dict, default=None, doc="{KEY: value}: pinned for every trial and confirmation run"),
    "trials": Field(int, default=16, check=between(0, 4096), doc="trials per scientific value"),
    "sampler": Field(str, default="sobol", choices=SAMPLERS),
    "sampler_seed": Field(int, default=0, check=non_negative),
    "trial_seed": Field(int, default=0, check=non_negative, doc="the training seed of every trial"),
    "seeds": ListOf(Field(int), default=[0, 1, 2, 3, 4], doc="confirmation seeds (test split)"),
    "metric": Field(str, default="accuracy"),
    "higher_is_better": Field(bool, default=True),
    "exploit": Field(dict, default=None, doc="{sampler: tpe, trials: N}: a second round per value from Optuna's TPE, "
                                             "given the first round's results"),
})


def specs_dir() -> Path:
    return paths.recipes_dir() / "studies"


def list_studies() -> list[str]:
    d = specs_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def study_dir(name: str) -> Path:
    return paths.project_root() / "pipelines" / "studies" / name


def reports_dir() -> Path:
    return paths.reports_dir() / "studies"


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _nest(dotted: dict) -> dict:
    """{"optim.lr": 0.1} -> {"optim": {"lr": 0.1}}"""
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _label(value) -> str:
    """A file-name-safe label of a scientific value."""
    if isinstance(value, list):  # a trick set
        text = "+".join(t if isinstance(t, str) else t["name"] for t in value) or "none"
    else:
        text = str(value)
    text = re.sub(r"[^A-Za-z0-9_.+=,-]", "_", text)
    return text if NAME.fullmatch(text) else f"v_{text}"


def _round(x: float) -> float:
    """Four significant digits: readable recipe files (and the same number on every machine)."""
    return float(f"{x:.4g}")


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    config: dict

    @property
    def key(self) -> str:
        return next(iter(self.config["scientific"]))

    @property
    def values(self) -> list:
        return self.config["scientific"][self.key]

    @property
    def labels(self) -> list[str]:
        return [_label(v) for v in self.values]

    @property
    def nuisance(self) -> dict:
        return self.config["nuisance"]

    @property
    def versus(self) -> bool:
        """A plain comparison of recipes: no trials, each recipe's own runs."""
        return self.key == "recipe" and not self.config["trials"]

    def points(self) -> list[dict]:
        """The trials' nuisance values, the same for every scientific value."""
        return sample(self.nuisance, self.config["trials"], self.config["sampler"], self.config["sampler_seed"])

    def trial_name(self, label: str, j: int) -> str:
        return f"{self.name}--{label}--t{j:02d}"

    def best_name(self, label: str) -> str:
        return f"{self.name}--{label}--best"

    def trials(self) -> list[dict]:
        """Every trial: {name, label, value, index, point, file}."""
        out = []
        for value, label in zip(self.values, self.labels):
            for j, point in enumerate(self.points()):
                name = self.trial_name(label, j)
                out.append({"name": name, "label": label, "value": value, "index": j, "point": point,
                            "file": study_dir(self.name) / "trials" / f"{name}.yaml"})
        return out

    def exploit_names(self) -> list[dict]:
        """The second round's trials (their points come from `suggest`): {name, label, value, index, file}."""
        ex = self.config["exploit"]
        if not ex:
            return []
        return [{"name": f"{self.name}--{label}--e{j:02d}", "label": label, "value": value, "index": self.config["trials"] + j,
                 "file": study_dir(self.name) / "exploit" / f"{self.name}--{label}--e{j:02d}.yaml"}
                for value, label in zip(self.values, self.labels) for j in range(ex["trials"])]

    def base_of(self, value) -> str:
        return value if self.key == "recipe" else self.config["base"]

    def overrides(self, value, point: dict, *, trial: bool) -> dict:
        """What a trial (or the best trial's confirmation recipe) sets over its base recipe."""
        base = load_recipe(self.base_of(value))
        out = _nest(self.config["fixed"])
        if self.key == "tricks":
            out["tricks"] = [*base.config["tricks"], *value]
        elif self.key != "recipe":
            out = _merge(out, _nest({self.key: value}))
        out = _merge(out, _nest(point))
        if trial:
            if decides_on_val(base):
                out = _merge(out, {"eval": {"split": "val"}})
            if "seed_block" in (base.config.get("speed") or {}):
                out = _merge(out, {"speed": {"seed_block": 1}})  # one seed per trial: a block would train five
        return out

    def recipe_text(self, value, point: dict, *, trial: bool, what: str) -> str:
        doc = {"extends": self.base_of(value), "description": f"study {self.name}: {what}",
               **self.overrides(value, point, trial=trial)}
        rel = self.path.relative_to(paths.project_root()) if self.path.is_absolute() else self.path
        return (f"# Generated by `reprozoo study` from {rel}: {what}. Edit the spec, not this file.\n"
                + yaml.safe_dump(doc, sort_keys=False, width=120))

    def decides_on(self) -> str:
        return "val" if self.config["trials"] and decides_on_val(load_recipe(self.config["base"])) else "test"


def decides_on_val(recipe) -> bool:
    """Whether the recipe's family can hold a validation split out of its training data."""
    from .families import get_family

    schema = getattr(get_family(recipe.family), "schema", {})
    ev = schema.get("eval")
    split = getattr(ev, "fields", {}).get("split") if ev is not None else None
    return split is not None and "val" in (split.choices or [])


def sample(nuisance: dict, n: int, sampler: str, seed: int) -> list[dict]:
    """`n` points of the nuisance ranges: scrambled Sobol / Halton (scipy.stats.qmc) or uniform random,
    seeded; mapped to each range (log ranges uniformly in log space) and rounded to 4 significant digits."""
    import numpy as np
    from scipy.stats import qmc

    keys = list(nuisance)
    if not keys or not n:
        return [{} for _ in range(n)]
    if sampler == "sobol":
        u = qmc.Sobol(d=len(keys), scramble=True, seed=seed).random(n)  # n not a power of 2 warns: balance is lost
    elif sampler == "halton":
        u = qmc.Halton(d=len(keys), scramble=True, seed=seed).random(n)
    else:
        u = np.random.default_rng(seed).random((n, len(keys)))
    points = []
    for row in u:
        point = {}
        for k, x in zip(keys, row):
            kind, arg = next(iter(nuisance[k].items()))
            if kind == "log":
                point[k] = _round(math.exp(math.log(arg[0]) + float(x) * (math.log(arg[1]) - math.log(arg[0]))))
            elif kind == "linear":
                point[k] = _round(arg[0] + float(x) * (arg[1] - arg[0]))
            elif kind == "int":
                point[k] = min(int(arg[0] + math.floor(float(x) * (arg[1] - arg[0] + 1))), arg[1])
            else:
                point[k] = copy.deepcopy(arg[min(int(float(x) * len(arg)), len(arg) - 1)])
        points.append(point)
    return points


def position(nuisance: dict, key: str, value) -> float | None:
    """Where `value` sits in the range of `key`, 0..1 (log ranges in log space); None for choices."""
    kind, arg = next(iter(nuisance[key].items()))
    if kind == "choice":
        return None
    lo, hi = arg
    if kind == "log":
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (value - lo) / (hi - lo)


# ---------------------------------------------------------------------------------------------- loading

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_range(path, key: str, spec) -> None:
    where = f"nuisance.{key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(path, where, "expected one of {log: [lo, hi]}, {linear: [lo, hi]}, {int: [lo, hi]}, "
                                       "{choice: [v1, v2, ...]}", KINDS)
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise ConfigError(path, f"{where}.choice", "expected a non-empty list of values")
        return
    if not isinstance(arg, list) or len(arg) != 2 or not all(_number(a) for a in arg):
        raise ConfigError(path, f"{where}.{kind}", f"expected [lo, hi], two numbers, got {arg!r}")
    lo, hi = arg
    if not lo < hi:
        raise ConfigError(path, f"{where}.{kind}", f"empty range: lo {lo} must be below hi {hi}")
    if kind == "log" and lo <= 0:
        raise ConfigError(path, f"{where}.log", f"a log range must be positive, got lo {lo}")
    if kind == "int" and not all(isinstance(a, int) for a in arg):
        raise ConfigError(path, f"{where}.int", f"expected two integers, got {arg!r}")


def load_study(ref: str | Path) -> Study:
    path = Path(ref) if str(ref).endswith((".yaml", ".yml")) else specs_dir() / f"{ref}.yaml"
    if not path.exists():
        raise ConfigError(path, None, "no such study spec", list_studies())
    config = SPEC.validate(yamlfile.load(path, "study spec"), path, "")
    if not NAME.fullmatch(path.stem):
        raise ConfigError(path, None, f"study name {path.stem!r} cannot name run folders: use letters, digits and _ . + - = ,")
    config["nuisance"] = config["nuisance"] or {}
    config["fixed"] = config["fixed"] or {}
    base = load_recipe(config["base"])
    sci = config["scientific"]
    if len(sci) != 1:
        raise ConfigError(path, "scientific", f"expected one parameter with its values, got {sorted(sci) or 'none'}")
    key, values = next(iter(sci.items()))
    if not isinstance(values, list) or len(values) < 2:
        raise ConfigError(path, f"scientific.{key}", "expected a list of at least 2 values to compare")
    if key == "recipe":
        known = recipe_names()
        for i, v in enumerate(values):
            if v not in known:
                raise ConfigError(path, f"scientific.recipe[{i}]", f"unknown recipe {v!r}", known)
    elif key == "tricks":
        if not all(isinstance(v, list) for v in values):
            raise ConfigError(path, "scientific.tricks", "expected trick sets: a list of lists, e.g. [[], [cosine]]")
    else:
        try:
            _get(base.config, key)
        except KeyError:
            raise ConfigError(path, f"scientific.{key}", f"not a key of recipe {base.name!r}") from None
    labels = [_label(v) for v in values]
    if len(set(labels)) != len(labels):
        raise ConfigError(path, f"scientific.{key}", f"values must differ, got {values!r}")
    for k, spec in config["nuisance"].items():
        if k in SPECIAL or k == key:
            raise ConfigError(path, f"nuisance.{k}", "the scientific parameter cannot also be a nuisance one"
                              if k == key else f"{k!r} cannot be tuned as a range")
        try:
            _get(base.config, k)
        except KeyError:
            raise ConfigError(path, f"nuisance.{k}", f"not a key of recipe {base.name!r}") from None
        _check_range(path, k, spec)
    for k in config["fixed"]:
        if k == key or k in config["nuisance"]:
            raise ConfigError(path, f"fixed.{k}", "also the scientific parameter or a nuisance one: pin it in one place")
        try:
            _get(base.config, k)
        except KeyError:
            raise ConfigError(path, f"fixed.{k}", f"not a key of recipe {base.name!r}") from None
    if config["nuisance"] and not config["trials"]:
        raise ConfigError(path, "trials", "a nuisance search needs at least 1 trial per value")
    if not config["nuisance"] and config["trials"] and key != "recipe":
        raise ConfigError(path, "nuisance", "trials need nuisance ranges to search (or trials: 0 with scientific: recipe)")
    if not config["nuisance"] and key != "recipe":
        raise ConfigError(path, "nuisance", "a study without a nuisance search compares recipes: scientific: {recipe: [...]}")
    if config["exploit"] is not None:
        config["exploit"] = EXPLOIT.validate(config["exploit"], path, "exploit")
        if not config["nuisance"]:
            raise ConfigError(path, "exploit", "a second round needs nuisance ranges to search")
    seeds = config["seeds"]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(path, "seeds", f"expected at least 2 distinct non-negative seeds, got {seeds!r}")
    study = Study(path.stem, path.resolve(), config)
    # every generated recipe must load: errors are reported against the spec, naming the setting
    probe = [(v, p) for v in values for p in (study.points()[:1] or [{}])]
    for v, point in probe:
        raw = _merge(_resolve(study.base_of(v)), study.overrides(v, point, trial=bool(config["trials"])))
        try:
            validate_recipe(raw, path)
        except ConfigError as e:
            raise ConfigError(path, e.key, f"{e.problem} (in the recipe this study generates for {_label(v)!r})", e.allowed) from None
    return study


def _resolve(name: str) -> dict:
    from .recipes import read_raw

    return read_raw(name)


# ---------------------------------------------------------------------------------------------- files

def rendered(study: Study) -> dict[Path, str]:
    """The trial recipe files (the pipeline is `pipeline.render_study`)."""
    return {t["file"]: study.recipe_text(t["value"], t["point"], trial=True,
                                         what=f"trial {t['index']} of {study.key} = {t['label']}")
            for t in study.trials()}


def write_trials(study: Study) -> list[Path]:
    files = rendered(study)
    folder = study_dir(study.name) / "trials"
    for old in folder.glob("*.yaml") if folder.is_dir() else []:
        if old not in files:  # a trial the spec no longer has (fewer trials, a value removed)
            old.unlink()
    return [atomic_write_text(p, text) for p, text in files.items()]


def confirm_runs(study: Study) -> dict[str, str]:
    """scientific label -> the run name whose seeds confirm it."""
    if study.versus:
        return dict(zip(study.labels, study.values))
    return {label: study.best_name(label) for label in study.labels}


# ---------------------------------------------------------------------------------------------- select

def _distributions(nuisance: dict) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, spec in nuisance.items():
        kind, arg = next(iter(spec.items()))
        out[key] = (FloatDistribution(arg[0], arg[1], log=kind == "log") if kind in ("log", "linear")
                    else IntDistribution(arg[0], arg[1]) if kind == "int" else CategoricalDistribution(arg))
    return out


def _optuna():
    try:
        import optuna
    except ImportError:
        from .families import MissingExtra

        raise MissingExtra("exploit: tpe needs the 'tpe' extra (optuna not installed): `uv sync --extra tpe` "
                           "(or `pip install 'reprozoo[tpe]'`)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def suggest(study: Study) -> dict:
    """The second round: per scientific value, Optuna's TPE (seeded, `constant_liar` so that one batch spreads
    out) told the first round's results, asked `exploit.trials` times; writes their recipes."""
    optuna = _optuna()
    rows = trial_results(study, rounds=("explore",))
    missing = [r["trial"] for r in rows if r["status"] == "missing"]
    if missing:
        raise ConfigError(study.path, "trials", f"first-round trials without a finished run: {missing[:5]}")
    dists = _distributions(study.nuisance)
    sign = "maximize" if study.config["higher_is_better"] else "minimize"
    points: dict[str, dict] = {}
    folder = study_dir(study.name) / "exploit"
    for value, label in zip(study.values, study.labels):
        sampler = optuna.samplers.TPESampler(seed=study.config["sampler_seed"], constant_liar=True, n_startup_trials=0)
        opt = optuna.create_study(direction=sign, sampler=sampler)
        for r in rows:
            if r["label"] == label:
                state = optuna.trial.TrialState.COMPLETE if r["status"] == "ok" else optuna.trial.TrialState.FAIL
                opt.add_trial(optuna.trial.create_trial(params=r["point"], distributions=dists, state=state,
                                                        value=r["value"] if r["status"] == "ok" else None))
        for t in [t for t in study.exploit_names() if t["label"] == label]:
            asked = opt.ask(dists)
            point = {k: (_round(v) if isinstance(v, float) else v) for k, v in asked.params.items()}
            points[t["name"]] = point
            atomic_write_text(t["file"], study.recipe_text(value, point, trial=True,
                                                          what=f"TPE trial {t['index']} of {study.key} = {label}"))
    for old in folder.glob("*.yaml") if folder.is_dir() else []:
        if old.stem not in points:
            old.unlink()
    result = {"study": study.name, "sampler": "tpe", "points": points}
    write_json(reports_dir() / f"{study.name}_exploit.json", result)
    return result


def trial_results(study: Study, rounds=("explore", "exploit")) -> list[dict]:
    """Each trial with its validation metric, or why it has none (infeasible: the NaN guard stopped it)."""
    from .runs import run_dir

    split = study.decides_on()
    out = []
    trials = [{**t, "round": "explore"} for t in study.trials()] if "explore" in rounds else []
    if "exploit" in rounds and study.config["exploit"]:
        points = read_json(reports_dir() / f"{study.name}_exploit.json")["points"]
        trials += [{**t, "round": "exploit", "point": points[t["name"]]} for t in study.exploit_names()]
    for t in trials:
        d = run_dir(t["name"], study.config["trial_seed"])
        metrics = read_json(d / "metrics.json") if (d / "metrics.json").exists() else None
        row = {"trial": t["name"], "label": t["label"], "index": t["index"], "round": t["round"], "point": t["point"],
               "value": None, "status": "missing"}
        if metrics is not None and "infeasible" in metrics:
            row["status"], row["reason"] = "infeasible", metrics["infeasible"]
        elif metrics is not None:
            v = metrics.get(split, {}).get(study.config["metric"])
            if v is None:
                raise ConfigError(d / "metrics.json", f"{split}.{study.config['metric']}", "not in this trial's metrics", metrics)
            row["status"], row["value"] = "ok", float(v)
        out.append(row)
    return out


def best_trials(study: Study, rows: list[dict]) -> dict[str, dict | None]:
    """The best feasible trial of each scientific value (ties: the lower trial index)."""
    sign = 1.0 if study.config["higher_is_better"] else -1.0
    best: dict[str, dict | None] = {}
    for label in study.labels:
        ok = [r for r in rows if r["label"] == label and r["status"] == "ok"]
        best[label] = max(ok, key=lambda r: (sign * r["value"], -r["index"])) if ok else None
    return best


def edge_warnings(study: Study, best: dict[str, dict | None], outer: float = 0.1) -> list[str]:
    """Nuisance ranges whose best trial sits in the outer `outer` of the range: widen them."""
    out = []
    for label, row in best.items():
        if row is None:
            continue
        for key in study.nuisance:
            pos = position(study.nuisance, key, row["point"][key])
            if pos is not None and (pos < outer or pos > 1 - outer):
                side = "low" if pos < outer else "high"
                out.append(f"{label}: the best trial's {key} = {row['point'][key]:g} sits at the {side} edge of its range "
                           f"({next(iter(study.nuisance[key].values()))}): widen the range")
    return out


def select(study: Study) -> dict:
    """Pick each value's best trial on the validation split; write its confirmation recipe and the trial table."""
    rows = trial_results(study)
    missing = [r["trial"] for r in rows if r["status"] == "missing"]
    if missing:
        raise ConfigError(study.path, "trials", f"trials without a finished run: {missing[:5]} "
                          f"(`reprozoo study {study.name}` trains them)")
    best = best_trials(study, rows)
    none = [label for label, row in best.items() if row is None]
    if none:
        raise ConfigError(study.path, "nuisance", f"every trial of {none[0]!r} diverged (NaN guard): narrow the ranges")
    for value, label in zip(study.values, study.labels):
        row = best[label]
        atomic_write_text(study_dir(study.name) / f"{study.best_name(label)}.yaml",
                          study.recipe_text(value, row["point"], trial=False,
                                            what=f"best trial of {study.key} = {label} ({row['trial']}, "
                                                 f"{study.decides_on()} {study.config['metric']} {row['value']:g})"))
    result = {"study": study.name, "decides_on": study.decides_on(), "metric": study.config["metric"], "trials": rows,
              "best": {label: row["trial"] for label, row in best.items()}, "edge_warnings": edge_warnings(study, best)}
    write_json(reports_dir() / f"{study.name}_trials.json", result)
    return result


def studies_of_tricks(base: str) -> dict[str, str]:
    """Trick name -> the study that tunes the base recipe with and without that one trick (for the ablation
    report's link). Read from the specs' text: no recipe is loaded."""
    out = {}
    for name in list_studies():
        path = specs_dir() / f"{name}.yaml"
        try:
            raw = yamlfile.load(path, "study spec")
        except ConfigError:
            continue
        sets = (raw.get("scientific") or {}).get("tricks") if isinstance(raw.get("scientific"), dict) else None
        if raw.get("base") != base or not isinstance(sets, list) or [] not in sets:
            continue
        for s in sets:
            if isinstance(s, list) and len(s) == 1:
                out.setdefault(s[0] if isinstance(s[0], str) else s[0].get("name"), name)
    return out
