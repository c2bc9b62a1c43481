import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

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


def test_env_records_the_machine_the_lock_file_the_dataset_and_the_diff(project):
    import hashlib
    import shutil

    from conftest import REPO

    shutil.copy(REPO / "uv.lock", project / "uv.lock")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "start"], cwd=project, check=True)
    write(project / "recipes/classification/tiny_mlp.yaml", TINY.format(iters=20, interval=10, ckpt=10))  # uncommitted
    execute(load_recipe("tiny_mlp"), 0, progress=False)
    d = run_dir("tiny_mlp", 0)
    env = json.loads((d / "env.json").read_text())
    cpuinfo = open("/proc/cpuinfo").read()
    assert env["cpu_model"] in cpuinfo and set(env["cpu_flags"]) <= set(cpuinfo.split())
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and env["blas"]["BLAS_INFO"]
    assert env["uv_lock_sha256"] == hashlib.sha256((project / "uv.lock").read_bytes()).hexdigest()
    data = project / "datasets/mnist1d"
    h = hashlib.sha256()
    for f in sorted(p for p in data.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(data)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).hexdigest().encode())
    assert env["dataset"] == {"name": "mnist1d", "sha256": h.hexdigest(), "bytes": sum(f.stat().st_size for f in data.rglob("*") if f.is_file())}
    assert env["git_dirty"] is True and "iters: 20" in (d / "git.patch").read_text()


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
    tsv = {n: (d / "dvclive/plots/metrics" / n).read_bytes() for n in ("loss.tsv", "accuracy.tsv", "lr.tsv", "grad_norm.tsv")}
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
    for name, data in tsv.items():  # byte for byte: the rows before the resume keep their "\n" line ends
        assert (d / "dvclive/plots/metrics" / name).read_bytes() == data, name


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


def test_gradient_norm_is_logged_every_step_and_a_nan_step_is_refused(project):
    """Gradient health (issue 8): `grad_norm` per step in the curves; a loss that turns NaN stops the run
    at that step, naming it, and keeps the weights from before it."""
    from reprozoo.families.classification.models import MODELS
    from reprozoo.families.openmmlab import NonFiniteStep

    execute(load_recipe("tiny_mlp"), 0, progress=False)
    rows = (run_dir("tiny_mlp", 0) / "dvclive/plots/metrics/grad_norm.tsv").read_text().splitlines()
    assert rows[0] == "step\tgrad_norm" and len(rows) == 301 and all(float(r.split("\t")[1]) > 0 for r in rows[1:])

    @MODELS.register("test_nan_after_50")
    class NanAfter50(torch.nn.Module):
        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.lin, self.calls = torch.nn.Linear(40, num_classes), 0

        def forward(self, x):
            self.calls += self.training
            return self.lin(x) * (float("nan") if self.training and self.calls == 50 else 1.0)

    write(project / "recipes/classification/nan_mlp.yaml",
          TINY.format(iters=300, interval=100, ckpt=25) + "model: {name: test_nan_after_50}\n")
    with pytest.raises(NonFiniteStep, match=r"non-finite loss at step 50 \(loss terms: loss nan\).*last_good.pth"):
        execute(load_recipe("nan_mlp"), 0, progress=False)
    work = next(p for p in (project / ".reprozoo/work/nan_mlp").iterdir() if p.is_dir())
    good = torch.load(work / "last_good.pth", weights_only=True)
    assert good["meta"]["iter"] == 49 and torch.isfinite(good["state_dict"]["net.lin.weight"]).all()
    assert (work / "iter_25.pth").exists() and not run_dir("nan_mlp", 0).exists()


def test_speed_settings_on_cpu(project):
    """`speed` defaults change nothing on a CPU; channels_last and bfloat16 autocast can be forced and are recorded."""
    import yaml

    from reprozoo.families.classification.engine import speed_settings

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    auto = {"data_on_device": True, "channels_last": "auto", "amp": "auto"}
    assert speed_settings(auto, cpu) == {"device": "cpu", "data_on_device": True, "channels_last": False, "amp": False}
    assert speed_settings(auto, gpu)["channels_last"] and speed_settings(auto, gpu)["amp"]
    assert not speed_settings({**auto, "amp": "off"}, gpu)["amp"]

    base = execute(load_recipe("tiny_mlp"), 0, progress=False)
    write(project / "recipes/classification/host_mlp.yaml", TINY.format(iters=300, interval=100, ckpt=100)
          .replace("speed: {seed_block: 1}", "speed: {seed_block: 1, data_on_device: false}"))
    assert execute(load_recipe("host_mlp"), 0, progress=False) == base  # same batches, same numbers
    params = yaml.safe_load((run_dir("tiny_mlp", 0) / "dvclive/params.yaml").read_text())
    assert params["speed"] == {"device": "cpu", "data_on_device": True, "channels_last": False, "amp": False}
    write(project / "recipes/classification/bf16_mlp.yaml", TINY.format(iters=300, interval=100, ckpt=100)
          .replace("speed: {seed_block: 1}", "speed: {seed_block: 1, amp: 'on', channels_last: 'on'}"))
    m = execute(load_recipe("bf16_mlp"), 0, progress=False)
    assert m != base and m["test"]["accuracy"] > 30  # bfloat16 changes the numbers, not the learning
    assert yaml.safe_load((run_dir("bf16_mlp", 0) / "dvclive/params.yaml").read_text())["speed"]["amp"] is True


def test_a_dataset_two_processes_need_is_prepared_once(project):
    """The ranks of a `devices: N` run (or parallel `reprozoo run`s) need the same dataset at once: one
    prepares it, the other waits and then takes it as it is (CI once failed with both preparing)."""
    from reprozoo import paths
    from reprozoo.io import exclusive

    out = paths.datasets_dir() / "mnist1d"
    with exclusive(paths.locks_dir() / "dataset-mnist1d.lock"):  # another process is preparing
        other = subprocess.Popen([sys.executable, "-m", "reprozoo.cli", "prepare", "mnist1d"], cwd=project,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "REPROZOO_ROOT": str(project)})
        said = ""
        while not said.startswith("waiting:") and (line := other.stderr.readline()):
            said = line
        assert said.strip() == "waiting: another process is preparing dataset 'mnist1d'", said
        assert other.poll() is None and not out.exists()
        out.mkdir(parents=True)
        (out / "made-by-the-lock-holder").write_text("")
    assert other.wait(timeout=120) == 0, other.stderr.read()
    assert other.stdout.read().strip() == f"prepared {out}"
    assert [p.name for p in out.iterdir()] == ["made-by-the-lock-holder"]  # taken as it was, not prepared again
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnist1d"]  # no staging folder


def test_step_overhead_benchmark_times_exactly_the_training_steps(project):
    """benchmarks/step_overhead.py: the Runner and the bare loop alternate step by step, the Runner's clock
    counts exactly --steps iterations (not its closing evaluation), and the ratios are medians of --repeats."""
    import re

    from conftest import REPO

    out = subprocess.run([sys.executable, str(REPO / "benchmarks/step_overhead.py"), "mnist1d_mlp", "--steps", "30",
                          "--warmup", "5", "--repeats", "2"], cwd=project, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "REPROZOO_ROOT": str(project)})
    assert out.returncode == 0, out.stdout + out.stderr
    # `batched` is the difference of two whole trainings (5 and 35 steps): at 30 steps it is within their start-up
    # noise and can come out negative on a busy machine; the benchmark is meant for thousands of steps
    assert len(re.findall(r"^repeat \d: bare [\d.]+ ms, bare_det [\d.]+ ms, batched -?[\d.]+ ms, mmengine [\d.]+ ms, "
                          r"bare_paired [\d.]+ ms$", out.stdout, re.M)) == 2, out.stdout
    assert "mnist1d_mlp, 30 steps after 5, medians of 2 repeats:" in out.stdout
    assert "seed-batched engine (5 seeds)" in out.stdout
    ratio = re.search(r"MMEngine/bare-deterministic = ([\d.]+) \(([\d.]+)-([\d.]+)\)", out.stdout)
    assert ratio and 0 < float(ratio[2]) <= float(ratio[1]) <= float(ratio[3]), out.stdout
    # parts of the Runner's step switched off: the clock still counts exactly --steps (the benchmark asserts it)
    out = subprocess.run([sys.executable, str(REPO / "benchmarks/step_overhead.py"), "mnist1d_mlp", "--steps", "20",
                          "--warmup", "3", "--repeats", "1", "--without", "guard", "--without", "hooks"], cwd=project,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "REPROZOO_ROOT": str(project)})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mnist1d_mlp, 20 steps after 3, medians of 1 repeats, the Runner without guard and hooks:" in out.stdout
