"""`reprozoo settle`: the error rate over repeated looks, and a real settle through DVC in a scratch repository."""
import json
import os
import subprocess
import sys

import numpy as np
import yaml

from reprozoo.ablation_stats import adopt_decisions
from reprozoo.settle import planned_looks
from reprozoo.stats import verdict

from test_pipeline import BIN, _repro, pipeline, tiny_baseline_repo

LOOKS = (5, 10, 15, 20)  # settle's default: 5 seeds, +5 per round, up to 20


def _false_adopt_rate(level: float, studies: int = 4000, seed: int = 0) -> float:
    """Share of studies with no true effect that call 'yes' or 'no' at any look."""
    rng = np.random.default_rng(seed)
    false = 0
    for _ in range(studies):
        d = rng.normal(0.0, 1.0, LOOKS[-1])
        if any(adopt_decisions([d[:n]], [0.0], level)[0] != "unclear" for n in LOOKS):
            false += 1
    return false / studies


def test_spending_alpha_over_the_looks_keeps_false_adopt_calls_at_5_percent():
    assert planned_looks(5, 20, 5) == len(LOOKS)
    naive = _false_adopt_rate(0.05)
    spent = _false_adopt_rate(0.05 / len(LOOKS))
    se = (0.05 * 0.95 / 4000) ** 0.5
    assert naive > 0.05 + 3 * se, naive  # deciding every look at 5%: repeated looks inflate the error (about 11%)
    assert spent <= 0.05 + 2 * se, spent  # settle's rule stays at (under) the nominal level


def _false_verdict_rate(level: float, studies: int = 2000, seed: int = 1) -> float:
    """The published run is one more draw of our own distribution: any below/above at any look is false."""
    rng = np.random.default_rng(seed)
    false = 0
    for _ in range(studies):
        published = rng.normal()
        x = rng.normal(0.0, 1.0, LOOKS[-1])
        if any(verdict(x[:n], published, confidence=1 - level).verdict in ("below", "above") for n in LOOKS):
            false += 1
    return false / studies


def test_spending_alpha_keeps_false_below_above_verdicts_at_5_percent():
    spent = _false_verdict_rate(0.05 / len(LOOKS))
    assert spent <= 0.05 + 2 * (0.05 * 0.95 / 2000) ** 0.5, spent
    assert _false_verdict_rate(0.05) > spent


def test_settle_adds_seeds_through_the_pipeline_until_the_cap(tmp_path):
    root, params = tiny_baseline_repo(tmp_path)
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "REPROZOO_ROOT": str(root)}
    _repro(root, "pipelines/tiny/dvc.yaml")
    values = [json.loads((root / f"runs/tiny_mlp/seed{s}/metrics.json").read_text())["test"]["accuracy"] for s in (0, 1)]
    # a claim at our own mean with a margin the 2-seed interval cannot fit into, but 3 seeds could
    half = 12.706 * np.std(values, ddof=1) * (1 / 2 + 1) ** 0.5
    (root / "baselines/tiny.yaml").write_text(yaml.safe_dump({
        "title": "Tiny test baseline", "source": {"paper": "A made-up paper for the test", "table": "Table 1"},
        "defaults": {"metric": "accuracy", "split": "test", "tolerance": 0.0},
        "claims": [{"recipe": "tiny_mlp", "value": float(np.mean(values)), "margin": float(max(half, 1e-3) * 0.9)}]}))
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text("# seeds per baseline\n" + text)
    pipeline(root, "tiny")
    out = subprocess.run([sys.executable, "-m", "reprozoo.cli", "settle", "tiny", "--max-seeds", "3", "--step", "1",
                          "--stable", "1.0"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "look 1/2: 2 seeds" in out.stderr and "look 2/2: 3 seeds" in out.stderr
    assert "stopped: the cap of 3 seeds is reached; seeds 2 -> 3" in out.stdout or "every conclusion is settled" in out.stdout
    params_text = (root / "params.yaml").read_text()
    assert params_text.startswith("# seeds per baseline") and yaml.safe_load(params_text)["tiny"]["seeds"] == [0, 1, 2]
    assert (root / "runs/tiny_mlp/seed2/metrics.json").exists()
    report = json.loads((root / "reports/settle/tiny.json").read_text())
    assert report["alpha_per_look"] == 0.025 and [len(lk["seeds"]) for lk in report["looks"]] == [2, 3]
    first = report["looks"][0]["conclusions"]["tiny_mlp:accuracy"]
    assert first["conclusion"] == "inconclusive" and not first["settled"]
    assert "| tiny_mlp:accuracy |" in (root / "reports/settle/tiny.md").read_text()
    assert "| settle | [settling `tiny`](settle/tiny.md) — seeds 2 -> 3" in (root / "reports/README.md").read_text()
    status = subprocess.run([os.path.join(BIN, "dvc"), "status", "pipelines/tiny/dvc.yaml"], cwd=root, env=env,
                            capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout


def test_seeds_from_two_machines_are_flagged_with_per_machine_means(project):
    from reprozoo.compare import compare
    from reprozoo.reports import markdown
    from reprozoo.stats import STABLE

    platforms = {0: "Linux-a", 1: "Linux-a", 2: "Linux-b", 3: "Linux-b", 4: "Linux-b"}
    for seed, acc in enumerate([93.2, 93.0, 92.1, 92.5, 92.0]):
        d = project / "runs/mnist1d_cnn" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"test": {"accuracy": acc}}))
        (d / "env.json").write_text(json.dumps({
            "device": "cpu (x86_64)", "platform": platforms[seed], "packages": {"torch": "2.13.0"},
            "determinism": {"threads": 1}, "git_revision": "abc", "wall_seconds": 1.0, "peak_rss_mib": 1.0,
            "command": "reprozoo run", "started_utc": "2026-01-01T00:00:00+00:00"}))
    result = compare("mnist1d", seeds=[0, 1, 2, 3, 4])
    cnn = result["claims"]["mnist1d_cnn:accuracy"]
    assert result["environment"]["train_wall_seconds_by_recipe"] == {"mnist1d_cnn": 1.0}  # the only recipe run
    assert [(m["seeds"], round(m["mean"], 2)) for m in cnn["machines"]] == [([0, 1], 93.1), ([2, 3, 4], 92.2)]
    assert 0 <= cnn["stability"] <= 1 and cnn["fragile"] == (cnn["stability"] < STABLE)
    md = markdown(result)
    assert "## Runs from several machines" in md
    assert "| mnist1d_cnn | machine | cpu (x86_64); Linux-b; torch 2.13.0 | ? | ? | 2, 3, 4 | 92.20 |" in md
    assert cnn["machines"][0]["differs"] == ["machine"]
    assert f"stable {100 * cnn['stability']:.0f}%" in md


def test_same_machine_other_lock_file_or_dataset_is_named(project):
    import json

    from reprozoo.compare import compare

    for seed, (lock, data) in enumerate([("aaa", "d1"), ("aaa", "d1"), ("bbb", "d1"), ("bbb", "d2")]):
        d = project / "runs/mnist1d_cnn" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"test": {"accuracy": 93.0 + seed / 10}}))
        (d / "env.json").write_text(json.dumps({
            "cpu_model": "AMD EPYC", "cpu_capability": "AVX2", "platform": "Linux", "packages": {"torch": "2.13.0"},
            "uv_lock_sha256": lock * 20, "dataset": {"sha256": data * 30}, "determinism": {"threads": 1},
            "git_revision": "abc", "wall_seconds": 1.0, "peak_rss_mib": 1.0, "command": "reprozoo run",
            "started_utc": "2026-01-01T00:00:00+00:00"}))
    groups = compare("mnist1d", seeds=[0, 1, 2, 3])["claims"]["mnist1d_cnn:accuracy"]["machines"]
    assert [g["seeds"] for g in groups] == [[0, 1], [2], [3]]
    assert groups[0]["differs"] == ["uv.lock", "dataset"] and groups[0]["machine"].startswith("AMD EPYC (AVX2 kernels)")


def test_an_ablations_conclusions_per_mode_with_settled_reasons(project):
    """settle's view of an ablation with two modes: every row labelled, a clear gain decisive, no effect open."""
    from reprozoo.ablations import load_ablation
    from reprozoo.settle import _Target

    (project / "params.yaml").write_text("mnist1d:\n  seeds: [0, 1, 2, 3, 4]\n")
    (project / "recipes/ablations").mkdir(exist_ok=True)
    (project / "recipes/ablations/two.yaml").write_text(
        "description: test\nbase: mnist1d_cnn\ntricks: [cosine, warmup]\nmodes: [cumulative, leave-one-out]\n"
        "seeds: [0, 1, 2, 3, 4]\n")
    rng = np.random.default_rng(0)
    for arm in load_ablation("two").arms():
        gain = 5.0 if "cosine" in arm.name else 0.0  # cosine: +5 points on every seed; warmup: nothing
        for seed in range(5):
            d = project / "runs" / arm.name / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({"test": {"accuracy": 90 + gain + seed * 0.1 + rng.normal(0, 0.3)}}))
    target = _Target("two")
    assert target.kind == "ablation" and target.baseline == "mnist1d" and target.seeds() == [0, 1, 2, 3, 4]
    got = target.conclusions(0.025, 0.9)
    assert sorted(got) == ["cumulative: cosine", "cumulative: warmup", "leave-one-out: cosine", "leave-one-out: warmup"]
    assert got["cumulative: cosine"]["conclusion"] == "yes" and got["cumulative: cosine"]["why"] == "decisive"
    assert got["leave-one-out: warmup"]["conclusion"] == "unclear" and got["leave-one-out: warmup"]["n"] == 5
