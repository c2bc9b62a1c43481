"""Ablation specs, arms, statistics and the report writers (on fixed inputs), and the spec through DVC."""
import csv
import io
import json

import pytest

from reprozoo.ablation_reports import ablation_report
from reprozoo.ablations import analyze, load_ablation, write_arms
from reprozoo.errors import ConfigError
from reprozoo.io import write_json

from conftest import write
from test_pipeline import _repro, pipeline, tiny_baseline_repo

SPEC = """\
description: "test: two tricks on the tiny MLP"
base: tiny_mlp
tricks: [cosine, {{name: label_smoothing, epsilon: {eps}}}]
modes: [cumulative, leave-one-out, one-at-a-time]
seeds: [0, 1]
"""


def spec(project, text=SPEC.format(eps=0.1), name="tiny_tricks"):
    write(project / f"recipes/ablations/{name}.yaml", text)
    return load_ablation(name)


def test_arms_are_trick_subsets_shared_across_modes(project):
    ab = spec(project)
    names = [a.name for a in ab.arms()]
    assert names == ["tiny_mlp", "tiny_tricks+cosine", "tiny_tricks+cosine+label_smoothing", "tiny_tricks+label_smoothing"]
    rows = [(r["mode"], r["with"].name, r["without"].name) for r in ab.rows()]
    assert rows == [
        ("cumulative", "tiny_tricks+cosine", "tiny_mlp"),
        ("cumulative", "tiny_tricks+cosine+label_smoothing", "tiny_tricks+cosine"),
        ("leave-one-out", "tiny_tricks+cosine+label_smoothing", "tiny_tricks+label_smoothing"),
        ("leave-one-out", "tiny_tricks+cosine+label_smoothing", "tiny_tricks+cosine"),
        ("one-at-a-time", "tiny_tricks+cosine", "tiny_mlp"),
        ("one-at-a-time", "tiny_tricks+label_smoothing", "tiny_mlp"),
    ]
    write_arms(ab)
    full = ab.recipe(ab.arms()[2])
    assert full.name == "tiny_tricks+cosine+label_smoothing"
    assert full.config["tricks"] == [{"name": "cosine"}, {"name": "label_smoothing", "epsilon": 0.1}]
    assert full.config["schedule"]["iters"] == 300  # everything else is the base recipe's
    assert ab.recipe(ab.arms()[0]).name == "tiny_mlp"  # the arm without tricks is the base recipe's own runs


@pytest.mark.parametrize("text,key,words", [
    (SPEC.format(eps=0.1).replace("cosine,", "warp,"), "tricks[0].name", ["unknown trick 'warp'", "cosine"]),
    (SPEC.format(eps=0.1).replace("base: tiny_mlp", "base: nope"), "base", ["unknown value 'nope'", "mnist1d_cnn"]),
    (SPEC.format(eps=0.1).replace("cosine,", "no_bias_decay,"), "tricks[0]", ["changes nothing", "weight_decay is 0"]),
    (SPEC.format(eps=0.1).replace("[cumulative,", "[stacked,"), "modes[0]", ["unknown value 'stacked'", "leave-one-out"]),
    (SPEC.format(eps=0.1).replace("seeds: [0, 1]", "seeds: [0]"), "seeds", ["at least 2 seeds"]),
    (SPEC.format(eps=0.1) + "published: {mixup: {delta: 1.0, source: x}}\n", "published.mixup", ["not one of", "cosine"]),
    (SPEC.format(eps=0.1) + "published: {cosine: {delta: big}}\n", "published.cosine", ["delta: <number>"]),
])
def test_bad_specs_name_file_key_and_allowed(project, text, key, words):
    with pytest.raises(ConfigError) as e:
        spec(project, text, name="bad")
    msg = str(e.value)
    assert "ablations/bad.yaml" in msg and f"'{key}'" in msg and all(w in msg for w in words), msg


def _fake_runs(project, values: dict[str, list[float]]):
    for arm, vals in values.items():
        for seed, v in enumerate(vals):
            d = project / "runs" / arm / f"seed{seed}"
            write_json(d / "metrics.json", {"test": {"accuracy": v}})
            write_json(d / "env.json", {"wall_seconds": 2.0, "started_utc": f"2026-11-2{seed}T00:00:00+00:00"})


FIXED = {  # five seeds; +cosine helps by exactly 2 on every seed, label smoothing does nothing consistent
    "tiny_mlp": [70.0, 71.0, 69.5, 70.5, 70.0],
    "tiny_tricks+cosine": [72.0, 73.0, 71.5, 72.5, 72.0],
    "tiny_tricks+cosine+label_smoothing": [72.1, 72.9, 71.4, 72.6, 72.0],
    "tiny_tricks+label_smoothing": [70.2, 70.8, 69.5, 70.6, 69.9],
}


def test_statistics_and_writers_on_fixed_inputs(project):
    ab = spec(project, SPEC.format(eps=0.1).replace("seeds: [0, 1]", "seeds: [0, 1, 2, 3, 4]")
              + "published: {label_smoothing: {delta: 0.4, source: 'Szegedy et al. 2016, Table 3'}}\n")
    write_arms(ab)
    _fake_runs(project, FIXED)
    result = analyze(ab)
    cum = result["modes"]["cumulative"]
    assert cum[0]["trick"] == "cosine" and cum[0]["difference"] == pytest.approx(2.0)
    assert cum[0]["ci_low"] == pytest.approx(2.0) and cum[0]["prob_improvement"] == 1.0 and cum[0]["adopt"] == "yes"
    assert cum[1]["difference"] == pytest.approx(0.0, abs=1e-9) and cum[1]["adopt"] == "unclear"
    loo = result["modes"]["leave-one-out"]
    assert loo[0]["trick"] == "cosine" and loo[0]["difference"] == pytest.approx(
        sum(a - b for a, b in zip(FIXED["tiny_tricks+cosine+label_smoothing"], FIXED["tiny_tricks+label_smoothing"])) / 5)
    assert result["arms"]["tiny_mlp"]["mean"] == pytest.approx(70.2) and result["runs"] == 20
    assert result["train_wall_seconds_by_recipe"] == {a: 2.0 for a in FIXED}  # what `reprozoo repro` plans by
    assert loo[1]["trick"] == "label_smoothing(epsilon=0.1)" or loo[1]["trick"] == "label_smoothing"
    assert loo[1]["published_delta"] == 0.4

    paths = ablation_report("tiny_tricks")
    d = project / "reports/ablations"
    md = (d / "tiny_tricks.md").read_text()
    assert "| + cosine | 72.20 ± 0.57 | 70.20 ± 0.57 | **+2.00** [+2.00, +2.00]" in md
    assert "| − cosine |" in md and "| cosine alone |" in md and "published effect" in md and "+0.40" in md
    rows = list(csv.DictReader(io.StringIO((d / "tiny_tricks.csv").read_text())))
    assert len(rows) == 6 and rows[0]["mode"] == "cumulative" and float(rows[0]["difference"]) == pytest.approx(2.0)
    tex = (d / "tiny_tricks.tex").read_text()
    assert tex.count("\\begin{tabular}") == 3 and "\\toprule" in tex and "\\bottomrule" in tex
    assert "$+$\\,cosine & 72.20 & $+2.00$ [$+2.00$, $+2.00$]" in tex and "tiny\\_mlp" in tex
    assert (d / "tiny_tricks.png").read_bytes()[:4] == b"\x89PNG"
    index = (project / "reports/README.md").read_text()
    assert "[tiny_tricks: test: two tricks on the tiny MLP](ablations/tiny_tricks.md)" in index and "adopt: cosine" in index
    assert project / "reports/README.md" in paths
    json.loads((d / "tiny_tricks.json").read_text())  # plain JSON (NaN-free)

    write_json(project / "runs/tiny_tricks+label_smoothing/seed4/metrics.json", {"test": {"loss": 1.0}})
    with pytest.raises(ConfigError, match="accuracy"):
        analyze(ab)
    (project / "runs/tiny_tricks+label_smoothing/seed4/metrics.json").unlink()
    with pytest.raises(ConfigError, match=r"no finished runs for seeds \[4\].*reprozoo ablate tiny_tricks"):
        analyze(ab)


def test_ablation_through_dvc_reruns_only_the_arms_an_edit_changes(tmp_path):
    root, _ = tiny_baseline_repo(tmp_path, {"recipes/ablations/tiny_tricks.yaml": SPEC.format(eps=0.1)})
    target = "pipelines/tiny/dvc.yaml"

    _, ran = _repro(root, target)
    trained = sorted(s for s in ran if s.startswith("train_"))
    assert trained == sorted(f"train_{a}@{s}" for a in ["tiny_mlp", "tiny_tricks+cosine", "tiny_tricks+cosine+label_smoothing",
                                                    "tiny_tricks+label_smoothing"] for s in (0, 1))  # 8 runs: 6 rows x 2 seeds
    assert ran[-1] == "site_tiny" and "ablate_tiny_tricks" in ran  # the site comes after every report it links
    md = (root / "reports/ablations/tiny_tricks.md").read_text()
    assert "## cumulative" in md and "## leave-one-out" in md and "## one-at-a-time" in md
    assert "ablations/tiny_tricks.md" in (root / "reports/README.md").read_text()

    # a one-line edit of the spec: only the two arms with label smoothing train again
    write(root / "recipes/ablations/tiny_tricks.yaml", SPEC.format(eps=0.2))
    pipeline(root, "tiny")
    _, ran = _repro(root, target)
    assert sorted(ran) == sorted(["ablate_tiny_tricks", "site_tiny", *(f"train_tiny_tricks+{a}@{s}" for s in (0, 1)
                                                          for a in ("cosine+label_smoothing", "label_smoothing"))])
    assert pipeline(root, "tiny", "--check", check=False).returncode == 0

    write(root / "recipes/ablations/tiny_tricks.yaml", SPEC.format(eps=0.1).replace("seeds: [0, 1]", "seeds: [0, 7]"))
    out = pipeline(root, "tiny", check=False)
    assert out.returncode == 2 and "seeds [7] are not in params.yaml:tiny.seeds" in out.stderr


def test_reprozoo_ablate_trains_missing_arms_without_dvc(project):
    from conftest import reprozoo

    spec(project, SPEC.format(eps=0.1).replace("[cumulative, leave-one-out, one-at-a-time]", "[one-at-a-time]"))
    out = reprozoo("ablate", "tiny_tricks", "--no-progress", cwd=project)
    assert "one-at-a-time:" in out.stdout and "adopt:" in out.stdout
    for arm in ("tiny_mlp", "tiny_tricks+cosine", "tiny_tricks+label_smoothing"):
        assert sorted(p.name for p in (project / "runs" / arm).glob("seed*")) == ["seed0", "seed1"]
    md = (project / "reports/ablations/tiny_tricks.md").read_text()
    assert "| cosine alone |" in md and "| label_smoothing alone |" in md
    again = reprozoo("ablate", "tiny_tricks", "--no-progress", cwd=project)  # finished runs are reused
    assert "already done" in again.stderr
    note = reprozoo("pipeline", "all", "--check", cwd=project, check=False)
    assert "no pipeline trains the base recipe of ablation 'tiny_tricks'" in note.stderr
