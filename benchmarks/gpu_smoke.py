"""GPU readiness: every family trains a few dozen iterations on CUDA, and ResNet-20 iterations/s of the
full He et al. recipe, into one JSON. Runs from the working tree on a machine with its own Python,
torch and nvcc but no network and no uv (the other packages installed from wheels first).

    python benchmarks/gpu_smoke.py --out smoke.json [--mmcv-sdist mmcv-2.1.0.tar.gz] [--device cuda]

Each step builds its data in the real file formats (the tests' builders: synthetic pixels, so
accuracies mean nothing; only that each path runs on the device and how fast), in a scratch
project. mmcv's CUDA ops do not exist in a CPU-built mmcv, so with `--mmcv-sdist` mmcv is compiled
there (for the local GPU's architecture only, all cores) while the classification and text steps run.
`--device cpu` runs the same steps on a CPU (how the script itself is tested without a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]


def _step(results: dict, name: str, fn, *args):
    t0 = time.perf_counter()
    try:
        out = fn(*args)
        results[name] = {"ok": True, **(out or {})}
    except Exception as e:  # keep going: the JSON says which step broke and how
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    results[name]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] {'ok' if results[name]['ok'] else 'FAILED: ' + results[name]['error']} "
          f"({results[name]['seconds']} s)", flush=True)


def environment() -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    try:
        env["nvcc"] = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except OSError:
        env["nvcc"] = None
    return env


def start_mmcv_build(sdist: Path, log: Path) -> subprocess.Popen:
    """Compile mmcv 2.1.0 with its CUDA ops against the local torch (only this GPU's architecture)."""
    import torch

    cap = ".".join(map(str, torch.cuda.get_device_capability(0))) if torch.cuda.is_available() else ""
    env = {**os.environ, "MMCV_WITH_OPS": "1", "FORCE_CUDA": "1" if cap else "0", "MAX_JOBS": str(os.cpu_count() or 4)}
    if cap:
        env["TORCH_CUDA_ARCH_LIST"] = cap
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "--target",
           os.environ.get("SMOKE_SITE", "/tmp/site"), str(sdist)]
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _project(tmp: Path, name: str) -> Path:
    root = tmp / name
    for d in ("recipes", "baselines"):
        shutil.copytree(REPO / d, root / d)
    os.environ["REPROZOO_ROOT"] = str(root)
    os.environ["REPROZOO_DATA"] = str(root / "store")
    os.chdir(root)
    return root


def _run(recipe_name: str, seed: int = 0) -> tuple[dict, dict]:
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import execute, run_dir

    metrics = execute(load_recipe(recipe_name), seed, progress=False)
    env = json.loads((run_dir(recipe_name, seed) / "env.json").read_text())
    return metrics, env


def classification(tmp: Path, iters: int) -> dict:
    from conftest import write

    root = _project(tmp, "cls")
    write(root / "recipes/classification/smoke_cnn.yaml",
          f"extends: mnist1d_cnn\nschedule: {{iters: {iters}}}\neval: {{interval: {iters}}}\ncheckpoint_interval: {iters}\n"
          "speed: {seed_block: 1}\n")  # one seed on MMEngine, with the GPU speed settings
    metrics, env = _run("smoke_cnn")
    params = (root / "runs/smoke_cnn/seed0/dvclive/params.yaml").read_text()
    return {"metrics": metrics, "device": env["device"], "wall_seconds": env["wall_seconds"], "speed": params.split("speed:")[-1][:300]}


def resnet20_speed(tmp: Path, iters: int) -> dict:
    """Iterations/s of cifar10_resnet20_he2016 (batch 128, its augmentation, the speed settings for the
    device): the run's own per-iteration time (MMEngine's IterTimerHook, in the DVCLive curve `time`) averaged
    over its second half, so start-up and warm-up drop out."""
    from conftest import write
    from test_cifar import _cifar_archive

    from reprozoo.families.classification.zoo import cifar
    from reprozoo.fetch import md5sum

    root = _project(tmp, "r20")
    archive = root / "store/cifar10/cifar-10-python.tar.gz"
    _cifar_archive(archive, n_train=5000, n_test=1000)
    cifar.CIFAR10.archive = ("cifar-10-python.tar.gz", md5sum(archive), None)
    half = max(2, iters // 2)
    write(root / "recipes/classification/r20.yaml",  # the recipe's decays at 1/2 and 3/4 of the run, as He et al.'s 32k/48k of 64k
          f"extends: cifar10_resnet20_he2016\nschedule: {{iters: {2 * half}, milestones: [{half}, {half + half // 2}]}}\n"
          f"eval: {{interval: {half}}}\ncheckpoint_interval: {2 * half}\n")
    _, env = _run("r20")
    rows = (root / "runs/r20/seed0/dvclive/plots/metrics/time.tsv").read_text().split()
    per_iter = float(rows[-1])  # seconds per iteration over the last logging window
    return {"iters_per_s": round(1 / per_iter, 2), "seconds_per_iter": per_iter, "iters": 2 * half,
            "wall_seconds": env["wall_seconds"], "full_recipe_64k_iters_minutes": round(64000 * per_iter / 60, 1)}


def text(tmp: Path, epochs: int) -> dict:
    from conftest import write
    from test_text import TINY_TEXT, _sst2_like

    root = _project(tmp, "text")
    _sst2_like(root / "store")
    write(root / "recipes/text/smoke_sst2.yaml",
          TINY_TEXT.format(vocab=root / "store/vocab.txt", epochs=epochs, extra="amp: true"))
    metrics, env = _run("smoke_sst2")
    return {"metrics": metrics, "device": env["device"], "wall_seconds": env["wall_seconds"]}


def _openmmlab(tmp: Path, family: str, make_data, recipe: str, **size) -> dict:
    """A reduced zoo config of `family` (the tests' `tiny` recipe) on data made by `make_data`."""
    import importlib

    tiny = importlib.import_module(f"test_{family}").tiny
    root = _project(tmp, family)
    make_data(root / "store")
    tiny(root, recipe, **size)
    metrics, env = _run(recipe)
    return {"metrics": metrics, "device": env["device"], "wall_seconds": env["wall_seconds"]}


def segmentation(tmp: Path, iters: int) -> dict:
    from test_segmentation import make_drive

    return _openmmlab(tmp, "segmentation", make_drive, "smoke_unet", iters=iters)


def detection(tmp: Path, epochs: int) -> dict:
    from test_detection import make_coco

    return _openmmlab(tmp, "detection", make_coco, "smoke_frcnn", epochs=epochs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_smoke.json")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--mmcv-sdist", type=Path, default=None, help="mmcv-2.1.0.tar.gz to compile with CUDA ops here")
    p.add_argument("--iters", type=int, default=40, help="iterations per family (default 40)")
    p.add_argument("--resnet-iters", type=int, default=200, help="ResNet-20 iterations, timed over the second half")
    p.add_argument("--skip", nargs="*", default=[], choices=["classification", "resnet20", "text", "segmentation", "detection"])
    args = p.parse_args()
    out = Path(args.out).resolve()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "device_asked": args.device}
    t0 = time.perf_counter()
    _step(results, "environment", environment)
    if args.device == "cuda" and not results["environment"].get("cuda_available"):
        results["environment"]["ok"] = False
        results["environment"]["error"] = "torch sees no CUDA device"
    build = None
    if args.mmcv_sdist:
        build = start_mmcv_build(args.mmcv_sdist, out.with_suffix(".mmcv-build.log"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        steps = [("classification", classification, args.iters), ("resnet20", resnet20_speed, args.resnet_iters),
                 ("text", text, 2)]
        for name, fn, *a in steps:
            if name not in args.skip:
                _step(results, name, fn, tmp, *a)
        if build is not None:
            rc = build.wait()
            results["mmcv_build"] = {"ok": rc == 0, "returncode": rc, "log": str(out.with_suffix(".mmcv-build.log"))}
            site = os.environ.get("SMOKE_SITE", "/tmp/site")
            if site not in sys.path:
                sys.path.insert(0, site)
        for name, fn, a in (("segmentation", segmentation, args.iters), ("detection", detection, 1)):
            if name not in args.skip:
                _step(results, name, fn, tmp, a)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    results["all_ok"] = all(v.get("ok", True) for v in results.values() if isinstance(v, dict))
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}: {'all ok' if results['all_ok'] else 'some steps FAILED'} in {results['total_seconds']} s")


if __name__ == "__main__":
    main()
