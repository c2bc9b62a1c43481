"""`reprozoo errors`: the analysis agrees with the runs' own metrics and with a hand count over the
predictions files, and bad requests end in one line."""
import csv

import numpy as np
import pytest

from conftest import reprozoo


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_errors_of_two_seeds_match_their_runs_and_a_hand_count(project):
    from reprozoo.error_analysis import analyse
    from reprozoo.io import read_json
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import execute, run_dir

    recipe = load_recipe("tiny_mlp")
    for seed in (0, 1):
        execute(recipe, seed, progress=False)
    r = analyse(recipe)
    accs = [read_json(run_dir("tiny_mlp", s) / "metrics.json")["test"]["accuracy"] for s in (0, 1)]
    assert r["kind"] == "labels" and r["seeds"] == [0, 1] and r["samples"] == 1000
    assert r["accuracy"]["per_seed"] == pytest.approx(accs)
    assert np.asarray(r["confusion"]).sum() == 2000 and np.trace(np.asarray(r["confusion"])) == pytest.approx(sum(accs) * 10)
    a, b = (_rows(run_dir("tiny_mlp", s) / "predictions.csv") for s in (0, 1))
    disagree = sum(x["prediction"] != y["prediction"] for x, y in zip(a, b))
    both_wrong = sum(x["prediction"] != x["label"] and y["prediction"] != y["label"] for x, y in zip(a, b))
    assert r["disagreement"]["samples"] == disagree > 0 and r["disagreement"]["always_wrong"] == both_wrong
    worst = max(range(1000), key=lambda i: float(a[i]["loss"]) + float(b[i]["loss"]))
    assert r["highest_loss"][0]["id"] == int(a[worst]["id"])
    assert 0 < r["accuracy"]["sampling_sd"] < 5  # about sqrt(p(1-p)/1000) in points
    out = project / "reports/errors"
    assert {p.name for p in out.iterdir()} == {"tiny_mlp.md", "tiny_mlp.json", "tiny_mlp-confusion.png", "tiny_mlp-highest-loss.png"}
    assert "Seeds disagree on" in (out / "tiny_mlp.md").read_text()


def test_errors_without_runs_or_with_an_unknown_seed_is_one_line(project):
    out = reprozoo("errors", "tiny_mlp", cwd=project, check=False)
    assert out.returncode == 2 and "no finished runs of recipe 'tiny_mlp'" in out.stderr and len(out.stderr.splitlines()) == 1
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import execute

    execute(load_recipe("tiny_mlp"), 0, progress=False)
    out = reprozoo("errors", "tiny_mlp", "--seed", "3", cwd=project, check=False)
    assert out.returncode == 2 and "no finished run for seed(s) [3]" in out.stderr and len(out.stderr.splitlines()) == 1
