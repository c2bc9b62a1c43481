"""`reprozoo settle TARGET`: add seeds in rounds until every conclusion of a baseline or an ablation is settled.

A conclusion is a verdict (reproduced/below/above/inconclusive) or an ablation row's adopt
(yes/no/unclear). It is settled when it is decisive (a verdict other than inconclusive, adopt yes/no)
at the look's error level, when it is stable (the same in at least `stable` of simulated replications,
see `stats.stability`), or when more seeds cannot change it (the published value's own spread is wider
than the margin; a gain smaller than the reference std can never be adopted).

Looking again after each round inflates false below/above/yes/no calls. `settle` plans its looks
(the seeds it starts with, then every `step` more up to `max_seeds`: K looks) and spends the error
level evenly over them: each look decides at alpha/K (Bonferroni over looks, the simplest alpha-spending
rule: the chance of any false call over all looks is at most alpha by the union bound; Lan & DeMets 1983
spending functions, Pocock 1977 for equal spending). A test checks by simulation that the error rate
stays at or under alpha, where deciding each look at alpha does not.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from . import paths
from .errors import ConfigError
from .io import atomic_write_text, write_json
from .stats import STABLE, stability, verdict

ALPHA = 0.05


def planned_looks(n0: int, max_seeds: int, step: int) -> int:
    return 1 + max(0, math.ceil((max_seeds - n0) / step))


def verdict_at(values, c, alpha: float) -> tuple[str, float | None, bool]:
    """(verdict at level alpha, its stability, whether more seeds could change it) for claim `c`."""
    conf = 1 - alpha
    v = verdict(values, c.value, std=c.std, n=c.n, tolerance=c.tolerance, margin=c.margin, confidence=conf)
    st = stability(values, c.value, std=c.std, n=c.n, tolerance=c.tolerance, margin=c.margin, confidence=conf)
    can_help = v.verdict == "inconclusive" and v.seeds_needed is not None
    return v.verdict, st, can_help


def adopt_at(diffs: list[np.ndarray], ref_stds: list[float], alpha: float) -> list[tuple[str, float | None, bool]]:
    """Per ablation row: (adopt at level alpha, its stability, whether more seeds could change it)."""
    from .ablation_stats import adopt_decisions, adopt_stability

    adopts = adopt_decisions(diffs, ref_stds, alpha)
    gains = [float(d.mean()) for d in diffs]
    stab = adopt_stability(diffs, ref_stds, adopts, alpha=alpha)
    # an unclear positive gain smaller than the reference std can never be adopted; a zero one never rejected
    can = [a == "unclear" and not (0 <= g <= s) for a, g, s in zip(adopts, gains, ref_stds)]
    return list(zip(adopts, stab, can))


@dataclass
class Look:
    seeds: list[int]
    conclusions: dict[str, dict] = field(default_factory=dict)  # label -> {conclusion, stability, settled, why}

    @property
    def open(self) -> list[str]:
        return [k for k, c in self.conclusions.items() if not c["settled"]]


def _settled(decisive: bool, st: float | None, can_help: bool, threshold: float) -> tuple[bool, str]:
    if decisive:
        return True, "decisive"
    if st is not None and st >= threshold:
        return True, "stable"
    if not can_help:
        return True, "more seeds cannot change it"
    return False, "fragile"


class _Target:
    """What settle needs of a baseline or an ablation: its seeds, how to add some, and its conclusions."""

    def __init__(self, name: str):
        from .ablations import list_ablations
        from .claims import list_baselines
        from .pipeline import load_params, training_baseline

        self.name = name
        if name in list_baselines() and name in load_params():
            self.kind, self.baseline, self.ablation_name = "baseline", name, None
        elif name in list_ablations():
            self.kind, self.ablation_name = "ablation", name
            self.baseline = training_baseline(self.ablation.config["base"])
            if self.baseline is None:
                raise ConfigError(self.ablation.path, "base", "no baseline pipeline trains this base recipe: settle needs one")
        else:
            raise ConfigError("command line", "TARGET", f"no baseline (with a params.yaml section) or ablation {name!r}",
                              [b for b in list_baselines() if b in load_params()] + list_ablations())

    @property
    def ablation(self):
        """The ablation spec, read again each time: settle adds seeds to it."""
        from .ablations import load_ablation

        return load_ablation(self.ablation_name) if self.ablation_name else None

    def seeds(self) -> list[int]:
        from .pipeline import baseline_params

        return list(self.ablation.config["seeds"]) if self.ablation else baseline_params(self.baseline)["seeds"]

    def add_seeds(self, new: list[int]) -> None:
        """Append seeds to params.yaml (and to the ablation spec), keeping the files' comments and layout."""
        from .pipeline import params_file, write

        _append_seeds(params_file(), [self.baseline, "seeds"], new)
        if self.ablation:
            _append_seeds(self.ablation.path, ["seeds"], new)
        write(self.baseline)

    def conclusions(self, alpha: float, threshold: float) -> dict[str, dict]:
        out = {}
        if self.kind == "baseline":
            from .claims import load_baseline
            from .runs import metric_value
            from .recipes import recipe_names
            from .runs import existing_seeds

            for c in load_baseline(self.name, recipe_names()).claims:
                used = [s for s in self.seeds() if s in existing_seeds(c.recipe)]
                values = [metric_value(c.recipe, s, c.split, c.metric) for s in used]
                v, st, can = verdict_at(values, c, alpha)
                settled, why = _settled(v != "inconclusive", st, can, threshold)
                out[c.label] = {"conclusion": v, "stability": st, "settled": settled, "why": why, "n": len(values)}
        else:
            from .ablation_stats import pair
            from .ablations import _values, label

            ab = self.ablation
            for mode, rows in _rows_by_mode(ab).items():
                diffs, refs, labels = [], [], []
                sign = 1.0 if ab.config["higher_is_better"] else -1.0
                for r in rows:
                    _, x, y = pair(_values(ab, r["with"]), _values(ab, r["without"]))
                    diffs.append(sign * (x - y))
                    refs.append(float(y.std(ddof=1)) if len(y) > 1 else 0.0)
                    labels.append(f"{mode}: {label(ab.tricks[r['trick']])}")
                for row, d, (a, st, can) in zip(labels, diffs, adopt_at(diffs, refs, alpha)):
                    settled, why = _settled(a != "unclear", st, can, threshold)
                    out[row] = {"conclusion": a, "stability": st, "settled": settled, "why": why, "n": len(d)}
        return out


def _rows_by_mode(ab) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in ab.rows():
        out.setdefault(r["mode"], []).append(r)
    return out


def _append_seeds(path, keys: list[str], new: list[int]) -> None:
    """Add `new` to the seeds list at `keys` of a YAML file, changing only that line when it is a one-line
    `seeds: [...]` (as in params.yaml and the ablation specs), so comments and layout stay as written."""
    import re

    text = path.read_text()
    lines = text.splitlines(keepends=True)
    start, indent = 0, ""
    for k in keys[:-1]:  # the line of each enclosing key, then search below it at a deeper indent
        start = next(i for i in range(start, len(lines)) if re.match(rf"{indent}{re.escape(k)}:\s*(#.*)?$", lines[i])) + 1
        indent += "  "
    pattern = re.compile(rf"^(\s*{re.escape(keys[-1])}:\s*)\[([^\]]*)\](.*)$", re.S)
    for i in range(start, len(lines)):
        m = pattern.match(lines[i])
        if m and len(m.group(1)) - len(m.group(1).lstrip()) == len(indent):
            old = [int(x) for x in m.group(2).split(",") if x.strip()]
            seeds = old + [s for s in new if s not in old]
            lines[i] = f"{m.group(1)}[{', '.join(map(str, seeds))}]{m.group(3)}"
            atomic_write_text(path, "".join(lines))
            return
    _append_seeds_yaml(path, keys, new)


def _append_seeds_yaml(path, keys: list[str], new: list[int]) -> None:
    """The same for a block list (`seeds:` then `- 0` lines): ruamel.yaml's round trip keeps the comments."""
    import io

    from ruamel.yaml import YAML

    y = YAML()
    y.width = 4096
    data = y.load(path.read_text())
    node = data
    try:
        for k in keys[:-1]:
            node = node[k]
        seeds = node[keys[-1]]
        seeds.extend(s for s in new if s not in seeds)
    except (KeyError, TypeError, AttributeError):
        raise ConfigError(path, ".".join(keys), "expected a list of seeds to add to") from None
    buf = io.StringIO()
    y.dump(data, buf)
    atomic_write_text(path, buf.getvalue())


def settle(name: str, *, max_seeds: int = 20, stable: float = STABLE, step: int = 5, jobs: int = 2,
           alpha: float = ALPHA) -> dict:
    """Add `step` seeds at a time until every conclusion is settled or `max_seeds` is reached; the report."""
    from .pipeline import pipeline_file
    from .repro import repro

    if not 0 < stable <= 1:
        raise ConfigError("command line", "--stable", f"must be in (0, 1], got {stable}")
    if step < 1 or max_seeds < 2:
        raise ConfigError("command line", "--step/--max-seeds", f"need step >= 1 and max-seeds >= 2, got {step}, {max_seeds}")
    target = _Target(name)
    t0 = time.perf_counter()
    start = target.seeds()
    K = planned_looks(len(start), max_seeds, step)
    level = alpha / K
    pipeline = str(pipeline_file(target.baseline).relative_to(paths.project_root()))
    looks: list[Look] = []
    while True:
        if repro([pipeline], jobs=jobs) != 0:
            raise ConfigError(pipeline, None, "some runs failed (listed above); settle stops here")
        look = Look(target.seeds(), target.conclusions(level, stable))
        looks.append(look)
        print(f"look {len(looks)}/{K}: {len(look.seeds)} seeds, {len(look.open)} of {len(look.conclusions)} "
              f"conclusions open", file=sys.stderr)
        if not look.open:
            stop = "every conclusion is settled"
            break
        if len(look.seeds) >= max_seeds:
            stop = f"the cap of {max_seeds} seeds is reached"
            break
        top = max(look.seeds)
        new = list(range(top + 1, top + 1 + min(step, max_seeds - len(look.seeds))))
        target.add_seeds(new)
    result = {"target": name, "kind": target.kind, "baseline": target.baseline, "alpha": alpha, "looks_planned": K,
              "alpha_per_look": level, "stable_threshold": stable, "step": step, "max_seeds": max_seeds,
              "seeds_start": start, "seeds_end": looks[-1].seeds, "stopped_because": stop,
              "wall_seconds": round(time.perf_counter() - t0, 1),
              "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "looks": [{"seeds": lk.seeds, "conclusions": lk.conclusions} for lk in looks]}
    _write(result)
    return result


def _write(result: dict) -> None:
    out = paths.reports_dir() / "settle"
    write_json(out / f"{result['target']}.json", result)
    last = result["looks"][-1]["conclusions"]
    first = result["looks"][0]["conclusions"]
    lines = [f"# Settling `{result['target']}` ({result['kind']})", "",
             f"Produced by `uv run reprozoo settle {result['target']} --max-seeds {result['max_seeds']} --stable "
             f"{result['stable_threshold']} --step {result['step']}`: {len(result['looks'])} look(s) of "
             f"{result['looks_planned']} planned, seeds {len(result['seeds_start'])} -> {len(result['seeds_end'])}, "
             f"stopped because {result['stopped_because']}; {result['wall_seconds']} s.", "",
             f"Each look decides at alpha = {result['alpha']}/{result['looks_planned']} = {result['alpha_per_look']:.4f} "
             f"(the error level spent evenly over the planned looks, so that looking again does not inflate false "
             f"calls); stable = share of simulated replications with the same conclusion (settled at "
             f"{100 * result['stable_threshold']:.0f}%).", "",
             "| conclusion | first look | last look | settled? |", "|---|---|---|---|"]

    def cell(c):
        st = "" if c["stability"] is None else f", stable {100 * c['stability']:.0f}%"
        return f"{c['conclusion']}{st} (n={c['n']})"

    for label, c in last.items():
        lines.append(f"| {label} | {cell(first[label]) if label in first else '–'} | {cell(c)} | "
                     f"{'yes: ' + c['why'] if c['settled'] else '**no**: fragile'} |")
    atomic_write_text(paths.reports_dir() / "settle" / f"{result['target']}.md", "\n".join(lines) + "\n")
    from .reports import write_index

    write_index()
