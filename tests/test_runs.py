import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reprozoo.errors import RunError
from reprozoo.recipes import load_recipe
from reprozoo.runs import execute, run_dir

from conftest import TINY, reprozoo, write


def test_same_seed_same_bytes_other_seed_differs(project):
    r = load_recipe("tiny_mlp")
    m0 = execute(r, 0, progress=False)
    first = (run_dir("tiny_mlp", 0) / "metrics.json").read_bytes()
    execute(r, 0, progress=False, force=True)
    assert (run_dir("tiny_mlp", 0) / "metrics.json").read_bytes() == first
    assert m0["test"]["accuracy"] > 30  # 300 steps already learn well above chance (10%)
    execute(r, 1, progress=False)
    assert (run_dir("tiny_mlp", 1) / "metrics.json").read_bytes() != first

    d = run_dir("tiny_mlp", 0)
    env = json.loads((d / "env.json").read_text())
    assert env["recipe_hash"] == r.hash and env["seed"] == 0
    assert env["determinism"]["deterministic_algorithms"] is True and env["determinism"]["threads"] == 1
    assert {"torch", "mmengine", "numpy"} <= set(env["packages"]) and env["command"]
    assert "hash: " + r.hash in (d / "recipe.yaml").read_text()
    curve = (d / "dvclive/plots/metrics/accuracy.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "accuracy"] and [r.split("\t")[0] for r in curve[1:]] == ["100", "200", "300"]
    assert not any(p.name.startswith(".") for p in d.parent.iterdir())  # no staging leftovers
    assert not (project / ".reprozoo/work/tiny_mlp" / f"seed0-{r.hash}").exists()  # scratch removed


def test_finished_run_is_reused_and_never_silently_replaced(project):
    r = load_recipe("tiny_mlp")
    execute(r, 0, progress=False)
    before = (run_dir("tiny_mlp", 0) / "metrics.json").read_bytes()
    assert execute(r, 0, progress=False) == json.loads(before)  # same recipe: no re-training
    write(project / "recipes/classification/tiny_mlp.yaml", TINY.format(iters=200, interval=100, ckpt=100))
    with pytest.raises(RunError, match="--force"):
        execute(load_recipe("tiny_mlp"), 0, progress=False)
    assert (run_dir("tiny_mlp", 0) / "metrics.json").read_bytes() == before


def _curve(d):
    return (d / "dvclive/plots/metrics/accuracy.tsv").read_text().splitlines()


def test_resume_after_sigkill_gives_the_uninterrupted_metrics(project):
    write(project / "recipes/classification/long_mlp.yaml", TINY.format(iters=3000, interval=250, ckpt=250))
    reprozoo("run", "long_mlp", "--seed", "3", "--no-progress", cwd=project)
    d = run_dir("long_mlp", 3)
    expected, expected_curve = (d / "metrics.json").read_bytes(), _curve(d)
    subprocess.run(["rm", "-rf", str(d)], check=True)

    h = load_recipe("long_mlp").hash
    marker = project / ".reprozoo/work/long_mlp" / f"seed3-{h}" / "last_checkpoint"
    proc = subprocess.Popen([sys.executable, "-m", "reprozoo.cli", "run", "long_mlp", "--seed", "3", "--no-progress"],
                            cwd=project, env={**os.environ, "REPROZOO_ROOT": str(project)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if marker.exists() and "iter_" in marker.read_text() and int(marker.read_text().split("iter_")[1].split(".")[0]) >= 750:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (d / "metrics.json").exists()  # a killed run leaves no partial results
    # the checkpoint is written before the validation of its iteration: a kill in between leaves no row
    # for it; make that case happen every time, the resumed run must log it again
    ckpt = int(marker.read_text().split("iter_")[1].split(".")[0])
    acc = marker.parent / "dvclive/plots/metrics/accuracy.tsv"
    acc.write_text("".join(r for r in acc.read_text().splitlines(keepends=True) if not r.startswith(f"{ckpt}\t")))

    reprozoo("run", "long_mlp", "--seed", "3", "--no-progress", cwd=project)
    env = json.loads((d / "env.json").read_text())
    assert env["resumed_from_iter"] >= 750
    assert (d / "metrics.json").read_bytes() == expected
    assert _curve(d) == expected_curve  # no duplicated or missing steps in the curves


def test_cli_reports_errors_without_traceback(project):
    out = reprozoo("run", "nope", cwd=project, check=False)
    assert out.returncode == 2 and "unknown recipe 'nope'" in out.stderr and "Traceback" not in out.stderr
    out = reprozoo("--help", cwd=project)
    assert "reprozoo run mnist1d_cnn --seed 0" in out.stdout


def test_curve_report_of_a_finished_run(project):
    from reprozoo.reports import curve_report

    execute(load_recipe("tiny_mlp"), 0, progress=False)
    png, md = curve_report("tiny_mlp", 0)
    text = md.read_text()
    assert png.read_bytes()[:4] == b"\x89PNG" and "| 100 |" in text and "| 300 |" in text and "reprozoo curve tiny_mlp" in text
    assert "| iteration | eval accuracy |" in text
