"""`reprozoo repro`: pending runs side by side, recorded in DVC as a serial `dvc repro` records them."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import write
from test_pipeline import BIN, _copy_repo, _repro, pipeline, tiny_baseline_repo

from reprozoo.repro import lock_without_run_hashes

TARGET = "pipelines/tiny/dvc.yaml"


def _env(root: Path) -> dict:
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "REPROZOO_ROOT": str(root)}


def _reprozoo_repro(root: Path, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reprozoo.cli", "repro", *args], cwd=root, env=_env(root),
                          capture_output=True, text=True, **kw)


def _three_seeds(tmp_path: Path, name: str, extra: dict | None = None, seeds=(0, 1, 2)) -> Path:
    root, params = tiny_baseline_repo(tmp_path / name, extra)
    params["tiny"]["seeds"] = list(seeds)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline(root, "tiny")
    return root


def _metrics(root: Path, recipe="tiny_mlp") -> dict[int, bytes]:
    return {int(p.parent.name[4:]): p.read_bytes() for p in sorted((root / "runs" / recipe).glob("seed*/metrics.json"))}


def test_parallel_repro_records_what_serial_dvc_repro_records(tmp_path):
    serial = _three_seeds(tmp_path, "serial", seeds=(0, 1))
    _repro(serial, TARGET)
    parallel = _three_seeds(tmp_path, "parallel", seeds=(0, 1))
    out = _reprozoo_repro(parallel, "tiny", "--jobs", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 pending runs, 2 at a time on local" in out.stderr
    assert out.stderr.count("done pipelines/tiny/dvc.yaml:train_tiny_mlp@") == 2
    for lock in ("dvc.lock", "pipelines/tiny/dvc.lock"):
        assert lock_without_run_hashes(parallel / lock) == lock_without_run_hashes(serial / lock), lock
    assert _metrics(parallel) == _metrics(serial) and len(_metrics(serial)) == 2  # bitwise, same machine
    status = subprocess.run([os.path.join(BIN, "dvc"), "status", TARGET], cwd=parallel, env=_env(parallel),
                            capture_output=True, text=True)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    again = _reprozoo_repro(parallel, "tiny", "--jobs", "2")
    assert again.returncode == 0 and "0 pending runs" in again.stderr


def test_longest_first_from_earlier_wall_times_and_dry_listing(tmp_path):
    root = _three_seeds(tmp_path, "r", {"recipes/classification/tiny_mlp2.yaml": "extends: tiny_mlp\n"})
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tiny"]["recipes"] = ["tiny_mlp2"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline(root, "tiny")
    out = _reprozoo_repro(root, "tiny", "--dry")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    stage = "pipelines/tiny/dvc.yaml:train_tiny_mlp"
    assert [ln.split()[0] for ln in lines] == [f"{stage}@{s}" for s in (0, 1, 2)] + [f"{stage}2@{s}" for s in (0, 1, 2)]
    assert all("time unknown" in ln for ln in lines) and "6 pending runs" in out.stderr
    # a fresh clone has no runs: the committed reports' seconds per run (a baseline's and an ablation's)
    (root / "reports/ablations").mkdir(parents=True, exist_ok=True)
    (root / "reports/tiny.json").write_text(json.dumps({"environment": {"train_wall_seconds_by_recipe": {"tiny_mlp": 40.0}}}))
    (root / "reports/ablations/a.json").write_text(json.dumps({"train_wall_seconds_by_recipe": {"tiny_mlp2": 4.0}}))
    (root / "reports/broken.json").write_text("[1, 2]")  # another shape: no estimate, no error
    lines = _reprozoo_repro(root, "tiny", "--dry").stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == [f"{stage}@{s}" for s in (0, 1, 2)] + [f"{stage}2@{s}" for s in (0, 1, 2)]
    assert "~40 s" in lines[0] and "~4 s" in lines[-1]
    # this machine's own times win over the reports'
    (root / ".reprozoo").mkdir()
    (root / ".reprozoo" / "timings.json").write_text('{"tiny_mlp": 5.0, "tiny_mlp2": 50.0}')
    lines = _reprozoo_repro(root, "tiny", "--dry").stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == [f"{stage}2@{s}" for s in (0, 1, 2)] + [f"{stage}@{s}" for s in (0, 1, 2)]
    assert "~50 s" in lines[0] and "~5 s" in lines[-1]
    assert not (root / "datasets").exists()  # a dry listing runs nothing


def test_eta_without_earlier_wall_times_learns_trainers_and_followers_apart():
    """A fresh clone has no wall times: the ETA guesses each queued job from the ended jobs of its kind. The
    durations are the default's in a fresh clone (a CNN block ~100 s, a seed that takes its block's result ~3 s),
    where one mean over both kinds showed an ETA of 5466 s with about 600 s left."""
    from reprozoo.executors import Job
    from reprozoo.repro import Progress, WorkLeft

    def job(name, estimate=0.0):
        return Job(name, "reprozoo run x", Path("."), Path("x.log"), estimate=estimate)

    trainers = [job(f"t@{i}") for i in range(10)]
    followers = [job(f"f@{i}") for i in range(40)]
    left = WorkLeft({j.stage for j in followers})
    assert left(trainers + followers, [], {}, 0.0) == 0.0  # nothing ended yet: no guess, no ETA shown
    left.ended(trainers[0], 100.0)
    left.ended(trainers[1], 80.0)
    left.ended(followers[0], 3.0)
    queued = trainers[3:] + followers[1:]
    # trainer 2 runs since t=50 and is at 70 s of its guessed 90 s
    assert left(queued, [trainers[2]], {"t@2": 50.0}, 120.0) == pytest.approx(7 * 90 + 39 * 3 + 20)
    assert left([job("known", estimate=500.0)], [], {}, 0.0) == 500.0  # an earlier wall time wins
    progress = Progress(total=50, slots=2, stream=open(os.devnull, "w"))
    assert progress.eta(left(queued, [], {}, 0.0)) == pytest.approx((7 * 90 + 39 * 3) / 2)


def _pid_of(pattern: str, root: Path, timeout: float = 60) -> int:
    """The process whose command line has `pattern`, working in the project `root` (another test running at
    the same time may run the same command in its own project; setproctitle overwrites /proc/PID/environ)."""
    end = time.time() + timeout
    while time.time() < end:
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    ours = Path(os.readlink(p / "cwd")).resolve() == root.resolve()
                except OSError:
                    continue
                if pattern in cmd and "/bin/sh" not in cmd and ours:
                    return int(p.name)
        time.sleep(0.05)
    raise AssertionError(f"no process {pattern!r}")


def test_killed_run_is_retried_and_resumes_a_failing_run_is_listed_and_skips_reports(tmp_path):
    reference = _three_seeds(tmp_path, "ref", seeds=(0,))
    _repro(reference, "pipelines/tiny/dvc.yaml:train_tiny_mlp")
    # a second recipe in the baseline that diverges at once: the NaN guard stops it (a deterministic error)
    bad = {"recipes/classification/tiny_bad.yaml": "extends: tiny_mlp\noptim: {name: sgd, lr: 1.0e+15}\n"}
    root = _three_seeds(tmp_path, "run", bad, seeds=(0, 1))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tiny"]["recipes"] = ["tiny_bad"]
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline(root, "tiny")
    proc = subprocess.Popen([sys.executable, "-m", "reprozoo.cli", "repro", "tiny", "--jobs", "2", "--retries", "1"],
                            cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = _pid_of("reprozoo run tiny_mlp --seed 0", root)
    work = root / ".reprozoo" / "work" / "tiny_mlp"
    end = time.time() + 120
    while not list(work.glob("seed0-*/iter_100.pth")) and time.time() < end:  # killed after its first checkpoint
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out + err
    assert "killed (exit 137); retrying, it resumes from its checkpoint" in err, err
    assert "2 run(s) failed, 2 recorded" in err
    assert "train_tiny_bad@0: exit 2; log: .reprozoo/logs/pipelines_tiny_dvc.yaml_train_tiny_bad@0.log" in err
    log = (root / ".reprozoo/logs/pipelines_tiny_dvc.yaml_train_tiny_bad@0.log").read_text()
    assert "non-finite" in log
    assert err.count("train_tiny_bad@0 in") == 1  # not retried
    env0 = yaml.safe_load((root / "runs/tiny_mlp/seed0/env.json").read_text())
    assert env0["resumed_from_iter"] == 100
    assert _metrics(root)[0] == _metrics(reference)[0]  # the resumed run equals the uninterrupted one
    assert not (root / "reports/tiny.json").exists()  # the comparison needs the failed run: skipped
    lock = yaml.safe_load((root / TARGET.replace(".yaml", ".lock")).read_text())["stages"]
    assert sorted(lock)[1:] == [f"train_tiny_mlp@{s}" for s in (0, 1)] and sorted(lock)[0].startswith("code_classification_")
    _repro(root, "pipelines/tiny/dvc.yaml:train_tiny_mlp", command="status")  # dvc agrees they are done


@pytest.mark.parametrize("edited", ["recipes/classification/tiny_mlp.yaml", "src/reprozoo/predictions.py"])
def test_a_recipe_or_code_edited_while_its_run_is_in_flight_is_not_recorded(tmp_path, edited):
    root = _three_seeds(tmp_path, "r", seeds=(0,))
    proc = subprocess.Popen([sys.executable, "-m", "reprozoo.cli", "repro", "tiny", "--jobs", "1"],
                            cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pid_of("reprozoo run tiny_mlp --seed 0", root)
    # a code file counts although the run depends on it through the code manifest, which changes only later
    (root / edited).write_text((root / edited).read_text() + ("optim: {lr: 0.002}\n" if edited.endswith(".yaml") else "# edited\n"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out + err
    assert f"{edited} changed while it ran; not recorded" in err
    assert not (root / TARGET.replace(".yaml", ".lock")).exists() or "train_tiny_mlp@0" not in (
        root / TARGET.replace(".yaml", ".lock")).read_text()


def test_gpus_are_shared_out_without_overlap(tmp_path, monkeypatch):
    from reprozoo import repro
    from reprozoo.executors import Job, LocalExecutor

    seen = tmp_path / "seen"
    seen.mkdir()
    jobs = [Job(f"s{i}", f"echo $CUDA_VISIBLE_DEVICES > {seen}/s{i}; sleep 1", tmp_path, tmp_path / f"s{i}.log", gpus=1)
            for i in range(4)]
    jobs.append(Job("two", f"echo $CUDA_VISIBLE_DEVICES > {seen}/two; sleep 1", tmp_path, tmp_path / "two.log", gpus=2))
    monkeypatch.setattr(repro, "record", lambda stages, p: {s: None for s in stages})
    p = repro.Plan(["x"], jobs=jobs)
    recorded, failed = repro.run_jobs(p, LocalExecutor(), slots=4, gpus=["0", "1", "2", "3"], retries=0)
    assert not failed and sorted(recorded) == ["s0", "s1", "s2", "s3", "two"]
    got = {p.name: p.read_text().strip() for p in seen.iterdir()}
    assert sorted(got[f"s{i}"] for i in range(4)) == ["0", "1", "2", "3"]  # four at once: one each
    assert len(got["two"].split(",")) == 2
    with pytest.raises(Exception, match="asks for 5 GPUs"):
        repro.run_jobs(repro.Plan(["x"], jobs=[Job("big", "true", tmp_path, tmp_path / "b.log", gpus=5)]),
                       LocalExecutor(), slots=1, gpus=["0", "1"], retries=0)


def test_bad_arguments_are_one_line(tmp_path):
    root = _copy_repo(tmp_path / "r")
    for args, msg in ((["nope"], "no pipeline or stage 'nope'"), (["--jobs", "0"], "argument --jobs/-j: --jobs must be in 1.."),
                      (["--gpus", "0,0"], "expected distinct GPU indices")):
        out = _reprozoo_repro(root, *args)
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith("reprozoo: error:") and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert msg in out.stderr, out.stderr


FAKE_SLURM = Path(__file__).with_name("fake_slurm")


def test_slurm_through_submitit_with_a_fake_cluster_and_detach(tmp_path):
    """sbatch/srun/sacct/scancel stand-ins on PATH run each job on this machine, as a one-node cluster would."""
    root = _three_seeds(tmp_path, "r", seeds=(0, 1))
    env = {**_env(root), "PATH": f"{FAKE_SLURM}{os.pathsep}{_env(root)['PATH']}", "FAKE_SLURM_DIR": str(tmp_path / "slurm")}
    args = [sys.executable, "-m", "reprozoo.cli", "repro", "tiny", "--executor", "slurm", "--jobs", "3",
            "-o", "slurm_partition=gpu", "-o", "mem=4G"]
    out = subprocess.run([*args, "--detach"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted 2 jobs (101, 102;" in out.stderr
    script = (tmp_path / "slurm" / "101.sbatch").read_text()
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --mem=4G" in script and "#SBATCH --cpus-per-task=1" in script
    out = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600)  # collects, no resubmission
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (tmp_path / "slurm" / "103.sbatch").exists()
    assert out.stderr.count("done pipelines/tiny/dvc.yaml:train_tiny_mlp@") == 2
    assert (root / "reports/tiny.md").exists() and not (root / ".reprozoo/slurm/jobs.json").exists()
    status = subprocess.run([os.path.join(BIN, "dvc"), "status", TARGET], cwd=root, env=env, capture_output=True, text=True)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout


def test_ray_executor_on_a_local_ray(tmp_path):
    root = _three_seeds(tmp_path, "r", seeds=(0, 1))
    out = _reprozoo_repro(root, "tiny", "--executor", "ray", "--jobs", "2", timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.count("done pipelines/tiny/dvc.yaml:train_tiny_mlp@") == 2
    assert len(_metrics(root)) == 2 and (root / "reports/tiny.md").exists()


def test_gpu_smoke_script_runs_every_family_on_a_cpu(tmp_path):
    """benchmarks/gpu_smoke.py's CUDA-free parts: each family's step and the JSON it writes (on a GPU machine the
    same script runs with --device cuda and compiles mmcv's CUDA ops)."""
    out = tmp_path / "smoke.json"
    run = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "benchmarks/gpu_smoke.py"), "--device", "cpu",
                          "--out", str(out), "--iters", "4", "--resnet-iters", "6"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=1200, env={**os.environ, "REPROZOO_THREADS": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    result = yaml.safe_load(out.read_text())
    for step in ("environment", "classification", "resnet20", "text", "segmentation", "detection"):
        assert result[step]["ok"], (step, result[step])
    assert result["all_ok"] and result["environment"]["cuda_available"] is False
    assert result["classification"]["device"].startswith("cpu") and "amp: false" in result["classification"]["speed"]
    assert result["resnet20"]["iters_per_s"] > 0 and result["resnet20"]["iters"] == 6
    for family in ("text", "segmentation", "detection"):
        assert result[family]["device"].startswith("cpu") and result[family]["metrics"], result[family]


def test_an_openmmlab_recipe_without_the_extra_names_the_install_command(tmp_path, monkeypatch):
    """Without mmcv/mmseg/mmdet the core still loads every recipe (their schema is checked), and running one of
    those families stops with one line naming the extra."""
    import importlib.util

    from reprozoo import families
    from reprozoo.errors import ReprozooError
    from reprozoo.recipes import load_recipe

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("mmcv", "mmseg", "mmdet") else real(name, *a))
    monkeypatch.setenv("REPROZOO_ROOT", str(Path(__file__).parents[1]))
    recipe = load_recipe("unet_fcn_drive_64x64")
    assert recipe.family == "segmentation"
    with pytest.raises(ReprozooError, match=r"the segmentation family needs the 'openmmlab' extra \(mmcv, mmseg not "
                                            r"installed\): `uv sync --extra openmmlab`"):
        families.require("segmentation")
    families.require("classification")  # nothing needed


def test_local_executor_forks_plain_reprozoo_commands_and_shells_the_rest(tmp_path, monkeypatch):
    """A train stage's `reprozoo ...` is forked from the preloaded server: its exit status, output, working
    directory, environment and process title are those of the shell's run; other commands go to a shell."""
    from reprozoo.executors import Job, LocalExecutor, _Forked, cli_argv, wait_any

    assert cli_argv("reprozoo run pipelines/a/x+cosine.yaml --seed 3") == ["run", "pipelines/a/x+cosine.yaml", "--seed", "3"]
    assert cli_argv("reprozoo run x --seed 0 > out") is None and cli_argv("python -m reprozoo.cli run x") is None
    assert cli_argv("reprozoo run 'x --seed 0") is None  # left to the shell, which says what is wrong
    (tmp_path / "f.txt").write_text("x")
    ex = LocalExecutor(preload=["reprozoo.families.classification"])
    jobs = [Job("print", "reprozoo fingerprint m.sha256 f.txt", tmp_path, tmp_path / "print.log"),
            Job("bad", "reprozoo run no_such_recipe", tmp_path, tmp_path / "bad.log", env={"REPROZOO_ROOT": str(tmp_path)}),
            Job("shell", "echo $GREETING; exit 3", tmp_path, tmp_path / "shell.log", env={"GREETING": "hello"}),
            Job("title", f"reprozoo fingerprint {tmp_path}/nowhere/m.sha256 {tmp_path}/missing", tmp_path / "..", tmp_path / "t.log")]
    for j in jobs:
        ex.submit(j)
    assert [isinstance(ex.procs[j.stage][0], _Forked) for j in jobs] == [True, True, False, True]
    done: dict = {}
    while len(done) < len(jobs):
        done.update(wait_any(ex, 0.05))
    assert done == {"print": 0, "bad": 2, "shell": 3, "title": 2}
    assert "wrote m.sha256 (1 files)" in (tmp_path / "print.log").read_text()
    assert (tmp_path / "m.sha256").read_text().endswith("  f.txt\n")  # relative to the job's directory
    assert (tmp_path / "bad.log").read_text().startswith("reprozoo: error: ")  # one line, no traceback
    assert (tmp_path / "shell.log").read_text() == "hello\n"
    # reprozoo's code edited since the server imported it: the next run starts fresh, with the new code
    import reprozoo.executors as executors

    real = executors._source_state
    with monkeypatch.context() as m:
        m.setattr(executors, "_source_state", lambda: {**real(), "edited.py": (1, 1)})
        ex.submit(Job("edited", "reprozoo fingerprint m2.sha256 f.txt", tmp_path, tmp_path / "edited.log"))
        assert not isinstance(ex.procs["edited"][0], _Forked)
        assert wait_any(ex, 0.05) == {"edited": 0}
    # a forked run shows as its command, and stops with its process group: here one that waits for its data
    import fcntl

    root = _three_seeds(tmp_path, "r", seeds=(0,))
    (root / ".reprozoo/locks").mkdir(parents=True, exist_ok=True)
    with open(root / ".reprozoo/locks/dataset-mnist1d.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a process preparing the dataset would
        ex.submit(Job("run", "reprozoo run tiny_mlp --seed 0", root, tmp_path / "run.log", env={"REPROZOO_ROOT": str(root)}))
        pid = ex.procs["run"][0].pid
        end = time.time() + 120
        log = tmp_path / "run.log"
        while not (log.exists() and "waiting: another process is preparing" in log.read_text()) and time.time() < end:
            time.sleep(0.05)
        assert Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0") == b"reprozoo run tiny_mlp --seed 0"
        assert ex.poll() == {}  # still waiting
        ex.cancel_all()
    assert not ex.procs and not Path(f"/proc/{pid}").exists() and not (root / "runs/tiny_mlp/seed0").exists()
