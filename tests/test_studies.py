"""Studies (`reprozoo study`, `reprozoo versus`): spec checks, the quasi-random points, the validation
split, infeasible trials, the plots' data, the edge warning, and a tiny study end to end through DVC."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import write
from test_pipeline import BIN, tiny_baseline_repo

from reprozoo.errors import ConfigError, NonFiniteStep

SPEC = """\
question: "Does cosine decay help once the learning rate is tuned?"
base: mnist1d_cnn
scientific: {tricks: [[], [cosine]]}
nuisance:
  optim.lr: {log: [1.0e-3, 1.0e-1]}
  optim.weight_decay: {log: [1.0e-6, 1.0e-2]}
trials: 8
"""


def _spec(project, text, name="s"):
    from reprozoo.studies import load_study

    write(project / f"recipes/studies/{name}.yaml", text)
    return load_study(name)


@pytest.mark.parametrize("change, key, words", [
    ("colour: blue\n", "colour", "unknown key"),
    ("nuisance: {optim.momentum_x: {log: [0.1, 1]}}\n", "nuisance.optim.momentum_x", "not a key of recipe 'mnist1d_cnn'"),
    ("nuisance: {optim.lr: {log: [0.1, 0.1]}}\n", "nuisance.optim.lr.log", "empty range"),
    ("nuisance: {optim.lr: {log: [0, 0.1]}}\n", "nuisance.optim.lr.log", "must be positive"),
    ("nuisance: {optim.lr: {cubic: [0.1, 1]}}\n", "nuisance.optim.lr", "expected one of"),
    ("scientific: {optim.lr: [0.01, 0.1]}\nnuisance: {optim.lr: {log: [1.0e-3, 1.0e-1]}}\n", "nuisance.optim.lr",
     "scientific parameter cannot also be a nuisance"),
    ("scientific: {tricks: [[]]}\n", "scientific.tricks", "at least 2 values"),
    ("scientific: {tricks: [[], [no_such_trick]]}\n", "tricks[0].name", "unknown trick"),
    ("seeds: [0]\n", "seeds", "at least 2 distinct"),
])
def test_bad_specs_name_the_file_and_key(project, change, key, words):
    base = yaml.safe_load(SPEC)
    base.update(yaml.safe_load(change))
    with pytest.raises(ConfigError) as e:
        _spec(project, yaml.safe_dump(base))
    assert e.value.key == key and words in str(e.value) and "recipes/studies/s.yaml" in str(e.value), str(e.value)


def test_sobol_points_are_reproducible_inside_their_ranges_and_extendable():
    from reprozoo.studies import position, sample

    nuisance = {"lr": {"log": [1e-4, 1e-1]}, "wd": {"linear": [0.0, 0.5]}, "n": {"int": [1, 4]}, "opt": {"choice": ["a", "b"]}}
    a = sample(nuisance, 16, "sobol", 3)
    assert a == sample(nuisance, 16, "sobol", 3) and a != sample(nuisance, 16, "sobol", 4)
    assert sample(nuisance, 8, "sobol", 3) == a[:8]  # more trials keep the earlier ones: only the new ones run
    assert all(1e-4 <= p["lr"] <= 1e-1 and 0 <= p["wd"] <= 0.5 and p["n"] in (1, 2, 3, 4) and p["opt"] in "ab" for p in a)
    # a scrambled Sobol sample of 16 puts exactly one point in each sixteenth of each axis (log space for lr)
    cells = sorted(int(position(nuisance, "lr", p["lr"]) * 16 + 1e-6) for p in a)
    assert cells == list(range(16))
    assert sorted(p["n"] for p in a) == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    halton, rnd = sample(nuisance, 5, "halton", 0), sample(nuisance, 5, "random", 0)
    assert halton == sample(nuisance, 5, "halton", 0) and rnd == sample(nuisance, 5, "random", 0) and halton != rnd


def test_validation_split_is_disjoint_stratified_and_stable():
    from reprozoo.families.classification.datasets import holdout

    labels = np.repeat(np.arange(10), [100, 200, 50, 50, 400, 100, 100, 100, 100, 300])
    tr, va = holdout(labels, 0.2, 0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    for c, n in zip(range(10), [100, 200, 50, 50, 400, 100, 100, 100, 100, 300]):
        assert (labels[va] == c).sum() == round(0.2 * n)
    tr2, va2 = holdout(labels, 0.2, 0)
    assert (va2 == va).all() and (tr2 == tr).all() and (np.diff(tr) > 0).all()  # same seed, same split, order kept
    assert not np.array_equal(holdout(labels, 0.2, 1)[1], va)


def test_a_val_run_trains_on_the_rest_and_records_the_split(project):
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import execute, run_dir

    write(project / "recipes/classification/val_mlp.yaml", "extends: tiny_mlp\nschedule: {iters: 20}\neval: {split: val, interval: 10}\n"
          "checkpoint_interval: 10\n")
    m = execute(load_recipe("val_mlp"), 0, progress=False)
    env = json.loads((run_dir("val_mlp", 0) / "env.json").read_text())
    assert list(m) == ["val"] and 0 <= m["val"]["accuracy"] <= 100
    assert env["val_split"]["size"] == 800 and env["val_split"]["train_size"] == 3200 and len(env["val_split"]["indices_sha256"]) == 64
    assert load_recipe("val_mlp").hash != load_recipe("tiny_mlp").hash
    write(project / "recipes/classification/bad_val.yaml", "extends: tiny_mlp\neval: {val_fraction: 0.1}\n")
    with pytest.raises(ConfigError, match="only eval.split: val holds data out"):
        load_recipe("bad_val")


def test_a_diverged_trial_is_recorded_as_infeasible(project):
    from reprozoo.families.classification.models import MODELS
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import execute, run_dir
    from reprozoo.studies import best_trials

    if "test_nan_trial" not in MODELS.names():
        @MODELS.register("test_nan_trial")
        class Nan(torch.nn.Module):
            def __init__(self, num_classes: int = 10):
                super().__init__()
                self.lin = torch.nn.Linear(40, num_classes)
                with torch.no_grad():
                    self.lin.weight[0, 0] = float("nan")

            def forward(self, x):
                return self.lin(x)

    write(project / "recipes/classification/nan_trial.yaml", "extends: tiny_mlp\nmodel: {name: test_nan_trial}\n")
    r = load_recipe("nan_trial")
    with pytest.raises(NonFiniteStep):
        execute(r, 0, progress=False)
    m = execute(r, 0, progress=False, record_divergence=True)
    assert "non-finite loss at step 1" in m["infeasible"]
    assert json.loads((run_dir("nan_trial", 0) / "metrics.json").read_text()) == m

    class S:
        labels, config = ["a", "b"], {"higher_is_better": True}
    rows = [{"label": "a", "index": 0, "status": "infeasible", "value": None},
            {"label": "a", "index": 1, "status": "ok", "value": 50.0},
            {"label": "b", "index": 0, "status": "infeasible", "value": None}]
    assert best_trials(S, rows) == {"a": rows[1], "b": None}


def _result():
    return {"study": "x", "values": ["none", "cosine"], "metric": "accuracy", "decides_on": "val", "scientific": "tricks",
            "seeds": [0, 1], "nuisance": {"optim.lr": {"log": [1e-3, 1e-1]}},
            "trials": [{"trial": "x--none--t00", "label": "none", "point": {"optim.lr": 0.002}, "value": 60.0, "status": "ok"},
                       {"trial": "x--none--t01", "label": "none", "point": {"optim.lr": 0.05}, "value": None, "status": "infeasible"},
                       {"trial": "x--cosine--t00", "label": "cosine", "point": {"optim.lr": 0.002}, "value": 58.0, "status": "ok"},
                       {"trial": "x--cosine--t01", "label": "cosine", "point": {"optim.lr": 0.05}, "value": 70.0, "status": "ok"}],
            "best": {"none": "x--none--t00", "cosine": "x--cosine--t01"},
            "confirmation": {"none": {"mean": 61.0, "ci_low": 59.0, "ci_high": 63.0},
                             "cosine": {"mean": 69.0, "ci_low": 68.0, "ci_high": 70.0}}}


def test_axis_and_isolation_plot_data_are_the_trials_and_confirmations():
    from reprozoo.study_reports import axis_data, axis_plot, isolation_data, isolation_plot

    r = _result()
    assert axis_data(r) == {"optim.lr": {"none": {"ok": [(0.002, 60.0)], "infeasible": [0.05]},
                                         "cosine": {"ok": [(0.002, 58.0), (0.05, 70.0)], "infeasible": []}}}
    assert isolation_data(r) == {"none": {"best_val": 60.0, "confirm_mean": 61.0, "confirm_ci": (59.0, 63.0)},
                                 "cosine": {"best_val": 70.0, "confirm_mean": 69.0, "confirm_ci": (68.0, 70.0)}}
    assert axis_plot(r)[:4] == b"\x89PNG" and isolation_plot(r)[:4] == b"\x89PNG"


def test_best_trials_at_the_edge_of_a_range_are_flagged(project):
    from reprozoo.studies import edge_warnings

    study = _spec(project, SPEC)
    best = {"none": {"point": {"optim.lr": 0.0011, "optim.weight_decay": 1e-4}},  # lr in the lowest 10% (log space)
            "cosine": {"point": {"optim.lr": 0.01, "optim.weight_decay": 1e-4}}}
    warnings = edge_warnings(study, best)
    assert len(warnings) == 1 and warnings[0].startswith("none: the best trial's optim.lr = 0.0011 sits at the low edge")
    assert edge_warnings(study, {"none": best["cosine"], "cosine": best["cosine"]}) == []


def _run(root, *args, check=True):
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "REPROZOO_ROOT": str(root)}
    out = subprocess.run([sys.executable, "-m", "reprozoo.cli", *args], cwd=root, env=env, capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _dvc_status(root, target):
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "REPROZOO_ROOT": str(root)}
    return subprocess.run([os.path.join(BIN, "dvc"), "status", target], cwd=root, env=env, capture_output=True, text=True).stdout


def test_a_tiny_study_end_to_end_through_dvc_and_a_versus(tmp_path):
    root, _ = tiny_baseline_repo(tmp_path)
    write(root / "recipes/classification/study_mlp.yaml", "extends: tiny_mlp\nschedule: {iters: 40}\neval: {interval: 20}\n"
          "checkpoint_interval: 20\n")
    spec = ("question: \"Does cosine help the tiny MLP once the learning rate is tuned?\"\nbase: study_mlp\n"
            "scientific: {tricks: [[], [cosine]]}\nnuisance: {optim.lr: {log: [1.0e-3, 1.0e-1]}}\ntrials: 2\nseeds: [0, 1]\n")
    write(root / "recipes/studies/tiny_study.yaml", spec)
    _run(root, "study", "tiny_study", "--jobs", "2")
    trials = json.loads((root / "reports/studies/tiny_study_trials.json").read_text())
    assert [t["status"] for t in trials["trials"]] == ["ok"] * 4 and trials["decides_on"] == "val"
    env = json.loads((root / "runs/tiny_study--none--t00/seed0/env.json").read_text())
    assert env["val_split"]["size"] == 800
    best = yaml.safe_load((root / "pipelines/studies/tiny_study/tiny_study--cosine--best.yaml").read_text())
    assert best["tricks"] == ["cosine"] and "eval" not in best and "optim" in best  # confirmed on test, full training set
    result = json.loads((root / "reports/studies/tiny_study.json").read_text())
    assert set(result["confirmation"]) == {"none", "cosine"} and len(result["comparisons"]) == 1
    assert result["conclusion"].startswith("With each value's optim.lr tuned over 2 sobol trials on val, cosine vs none:")
    report = (root / "reports/studies/tiny_study.md").read_text()
    assert "## Confirmation" in report and "adopt?" in report and (root / "reports/studies/tiny_study_axis.png").exists()
    assert "up to date" in _dvc_status(root, "pipelines/studies/tiny_study/dvc.yaml")
    first = {p.parent.parent.name: p.stat().st_mtime_ns for p in (root / "runs").glob("tiny_study--*--t*/seed0/env.json")}

    write(root / "recipes/studies/tiny_study.yaml", spec.replace("trials: 2", "trials: 3"))  # one more trial per value
    _run(root, "study", "tiny_study", "--jobs", "2")
    now = {p.parent.parent.name: p.stat().st_mtime_ns for p in (root / "runs").glob("tiny_study--*--t*/seed0/env.json")}
    assert {k: now[k] for k in first} == first and sorted(set(now) - set(first)) == ["tiny_study--cosine--t02", "tiny_study--none--t02"]

    write(root / "recipes/classification/tiny_wide.yaml", "extends: tiny_mlp\nmodel: {name: mnist1d_mlp, hidden_size: 150}\n")
    _run(root, "versus", "tiny_mlp", "tiny_wide", "--jobs", "2")
    vs = json.loads((root / "reports/studies/tiny_wide__vs__tiny_mlp.json").read_text())
    assert vs["runs"] == {"tiny_mlp": "tiny_mlp", "tiny_wide": "tiny_wide"} and vs["seeds"] == [0, 1]  # the baseline's seeds
    assert vs["published"] == {"recipe": "tiny_mlp", "value": 10.0, "split": "test", "baseline": "tiny"}
    md = (root / "reports/studies/tiny_wide__vs__tiny_mlp.md").read_text()
    assert "difference vs tiny_mlp" in md and "Published (tiny" in md
    assert "up to date" in _dvc_status(root, "pipelines/studies/tiny_wide__vs__tiny_mlp/dvc.yaml")


def test_a_tpe_round_is_told_the_first_rounds_results_and_is_reproducible(project):
    """`exploit: tpe`: Optuna's TPE, told each value's first-round trials (a diverged one as failed), asks the
    second round; the same results give the same points; select then weighs both rounds."""
    import math

    from reprozoo.studies import select, suggest, trial_results

    study = _spec(project, SPEC.replace("trials: 8", "trials: 8\nexploit: {sampler: tpe, trials: 4}"))
    for t in study.trials():
        d = project / "runs" / t["name"] / "seed0"
        d.mkdir(parents=True)
        lr = t["point"]["optim.lr"]
        m = {"infeasible": "diverged"} if lr > 0.05 else {"val": {"accuracy": 90 - 10 * abs(math.log10(lr) + 2)}}
        (d / "metrics.json").write_text(json.dumps(m))
    first = suggest(study)["points"]
    assert sorted(first) == [f"s--{v}--e{j:02d}" for v in ("cosine", "none") for j in range(4)]
    assert suggest(study)["points"] == first  # seeded
    assert all(1e-3 <= p["optim.lr"] <= 1e-1 and 1e-6 <= p["optim.weight_decay"] <= 1e-2 for p in first.values())
    recipe = yaml.safe_load((project / "pipelines/studies/s/exploit/s--none--e00.yaml").read_text())
    assert recipe["optim"] == {"lr": first["s--none--e00"]["optim.lr"], "weight_decay": first["s--none--e00"]["optim.weight_decay"]}
    for name, p in first.items():  # the second round lands where the first was good
        d = project / "runs" / name / "seed0"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"val": {"accuracy": 95.0 if name.endswith("e02") else 1.0}}))
    rows = trial_results(study)
    assert len(rows) == 24 and {r["round"] for r in rows} == {"explore", "exploit"}
    assert sum(r["status"] == "infeasible" for r in rows) == 2 * sum(t["point"]["optim.lr"] > 0.05 for t in study.trials()) // 2
    assert select(study)["best"] == {"none": "s--none--e02", "cosine": "s--cosine--e02"}
