import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY = """\
extends: mnist1d_mlp
description: "test: MLP for {iters} steps"
schedule: {{iters: {iters}}}
eval: {{interval: {interval}}}
checkpoint_interval: {ckpt}
speed: {{seed_block: 1}}  # one seed per process on MMEngine: these tests are about that engine (test_batched.py: blocks)
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run_outputs(name: str, seed: int, predictions: bool = False) -> dict:
    """A run's result files by name: metrics.json and every curve (and predictions.csv), as bytes."""
    from reprozoo.runs import run_dir

    d = run_dir(name, seed)
    files = {"metrics.json": (d / "metrics.json").read_bytes()}
    if predictions:
        files["predictions.csv"] = (d / "predictions.csv").read_bytes()
    for tsv in sorted((d / "dvclive/plots/metrics").glob("*.tsv")):
        files[tsv.name] = tsv.read_bytes()
    return files


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch reprozoo project: the repo's recipes and claims plus a tiny recipe, cwd set to it."""
    root = tmp_path / "proj"
    shutil.copytree(REPO / "recipes", root / "recipes")
    shutil.copytree(REPO / "baselines", root / "baselines")
    write(root / "recipes/classification/tiny_mlp.yaml", TINY.format(iters=300, interval=100, ckpt=100))
    monkeypatch.chdir(root)
    monkeypatch.setenv("REPROZOO_ROOT", str(root))
    monkeypatch.delenv("REPROZOO_DATA", raising=False)
    return root


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """An empty data store as REPROZOO_DATA: tests write raw files there in their official layout."""
    root = tmp_path / "store"
    root.mkdir()
    monkeypatch.setenv("REPROZOO_DATA", str(root))
    return root


def reprozoo(*args, cwd, check=True, env=None, **kw):
    """Run the CLI in a subprocess, as a user (or DVC) would."""
    cmd = [sys.executable, "-m", "reprozoo.cli", *map(str, args)]
    full_env = {**os.environ, "REPROZOO_ROOT": str(cwd), **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=check, **kw)


def short_run(project: Path, base: str, *, iters: int, batch: int, eval_batch: int, extra: str = "") -> dict:
    """Train a few iterations of recipe `base` (written as `short_<base>.yaml`) with seed 0; its metrics."""
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import execute

    half = max(1, iters // 2)
    write(project / f"recipes/classification/short_{base}.yaml",
          f"extends: {base}\nschedule: {{iters: {iters}, batch_size: {batch}, milestones: [{half}, {iters - 1}]}}\n"
          f"eval: {{interval: {half}, batch_size: {eval_batch}}}\ncheckpoint_interval: {half}\n{extra}")
    return execute(load_recipe(f"short_{base}"), 0, progress=False)
