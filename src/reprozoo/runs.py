"""Runs: one directory per (recipe, seed) under `runs/`, assembled atomically.

    runs/<recipe>/seed<N>/metrics.json   final metrics, {split: {metric: value}}; bitwise-stable
    runs/<recipe>/seed<N>/env.json       versions, device, determinism flags, git, recipe hash, command, timing
    runs/<recipe>/seed<N>/recipe.yaml    the resolved recipe with its hash
    runs/<recipe>/seed<N>/dvclive/       training curves
    runs/<recipe>/seed<N>/predictions.*  the final evaluation's per-sample predictions (`reprozoo.predictions`)

Training writes checkpoints to `.reprozoo/work/<recipe>/seed<N>-<hash>/` (never a DVC output, so a
killed run resumes from there). The run directory is built under a hidden name and renamed into
place at the end: a killed run never leaves a partial `metrics.json`.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from . import distributed, paths
from .errors import NonFiniteStep, RunError
from .io import atomic_write_text, exclusive, read_json, write_json
from .recipes import Recipe

# CPU features that change which kernels run, hence the bits of a result (AVX2 vs AVX-512 vs AMX)
KERNEL_FLAGS = {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "asimd", "sve"}
PACKAGES = ("torch", "mmengine", "numpy", "scipy", "dvc", "dvclive", "mnist1d", "mmcv", "mmdet", "mmsegmentation", "transformers")


@dataclass
class RunContext:
    recipe: Recipe
    seed: int
    work_dir: Path  # scratch: checkpoints and framework logs
    curves_dir: Path  # DVCLive directory while training
    threads: int
    progress: bool = True
    resumed_from: int = 0  # set by the family when it resumes from a checkpoint
    record: dict = field(default_factory=dict)  # what the family adds to env.json (e.g. `distributed`)
    outputs: Path | None = None  # files the family writes here (predictions) go into the run directory

    def __post_init__(self):
        if self.outputs is None:
            self.outputs = self.curves_dir.parent / "outputs"


def run_dir(recipe_name: str, seed: int) -> Path:
    return paths.runs_dir() / recipe_name / f"seed{seed}"


def metric_value(recipe: str, seed: int, split: str, metric: str, metrics: dict | None = None) -> float:
    """One metric of one run; `metrics` is its metrics.json when the caller has read it already."""
    from .errors import ConfigError

    path = run_dir(recipe, seed) / "metrics.json"
    metrics = read_json(path) if metrics is None else metrics
    if split not in metrics:
        raise ConfigError(path, split, "split not in this run's metrics", metrics)
    if metric not in metrics[split]:
        raise ConfigError(path, f"{split}.{metric}", "metric not in this run's metrics", metrics[split])
    return float(metrics[split][metric])


def existing_seeds(recipe_name: str) -> list[int]:
    d = paths.runs_dir() / recipe_name
    if not d.is_dir():
        return []
    return sorted(int(p.name[4:]) for p in d.glob("seed*") if p.name[4:].isdigit() and (p / "metrics.json").exists())


def execute(recipe: Recipe, seed: int, *, force: bool = False, threads: int | None = None, progress: bool = True,
            record_divergence: bool = False) -> dict:
    """Train `recipe` with `seed` unless an identical run is already complete; return its metrics.
    `record_divergence` (study trials): a run the NaN guard stops is finished as `{"infeasible": why}`."""
    from .families import get_family

    final = run_dir(recipe.name, seed)
    if (final / "metrics.json").exists():
        old_hash = read_json(final / "env.json").get("recipe_hash") if (final / "env.json").exists() else None
        if old_hash == recipe.hash and not force:
            print(f"{final}: already done (recipe {recipe.hash}); --force re-runs it", file=sys.stderr)
            return read_json(final / "metrics.json")
        if not force:
            raise RunError(f"{final} holds results of another version of recipe {recipe.name!r} "
                           f"(hash {old_hash}, now {recipe.hash}); they are kept. Pass --force to replace them.")
    threads = threads or int(os.environ.get("REPROZOO_THREADS", "1"))
    work = paths.work_dir() / recipe.name / f"seed{seed}-{recipe.hash}"
    rank = distributed.world()[0]
    if rank > 0:  # a DDP follower: trains in step with rank 0, resumes from its checkpoints, writes no run
        scratch = work.with_name(f"{work.name}.rank{rank}")
        try:
            get_family(recipe.family).train(recipe, seed, RunContext(recipe, seed, work, scratch / "dvclive", threads, False))
        except NonFiniteStep:
            if not record_divergence:
                raise
        shutil.rmtree(scratch, ignore_errors=True)
        return {}
    with exclusive(work.with_suffix(".lock")):
        if seed_block(recipe, seed) != [seed]:
            metrics, env, curves = _from_block(recipe, seed, threads, progress, force)
            _assemble(final, metrics, env, recipe, curves, curves.parent / "outputs")
            return metrics
        ctx = RunContext(recipe, seed, work, work / "dvclive", threads, progress)
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        try:
            metrics = get_family(recipe.family).train(recipe, seed, ctx)
        except NonFiniteStep as e:
            if not record_divergence:
                raise
            metrics = {"infeasible": str(e)}
        wall = time.perf_counter() - t0
        env = capture_env(recipe, seed, ctx, started, wall)
        _assemble(final, metrics, env, recipe, ctx.curves_dir, ctx.outputs)
        shutil.rmtree(work, ignore_errors=True)
    return metrics


def seed_block(recipe: Recipe, seed: int) -> list[int]:
    """The seeds trained together with `seed` (`speed.seed_block`): fixed blocks 0..n-1, n..2n-1, ..."""
    n = (recipe.config.get("speed") or {}).get("seed_block", 1)
    first = seed - seed % n
    return list(range(first, first + n))


def train_code(recipe: Recipe, tricks: bool | None = None) -> list[Path]:
    """The files and folders a run of `recipe` executes: its family's (`train_code`, else the family's
    whole folder) and the core's. Its DVC stage depends on them; a seed block's folder name hashes them.
    `tricks`: whether the run applies tricks (an ablation arm of a base recipe), default the recipe's."""
    from .families import get_family

    package = Path(__file__).resolve().parent
    family = get_family(recipe.family)
    own = family.train_code(recipe.config)
    core = [package / "frameworks", package / "runs.py", package / "seeding.py", package / "distributed.py",
            package / "predictions.py"]
    tricks = bool(recipe.config.get("tricks")) if tricks is None else tricks
    return [Path(p) for p in own] + core + ([package / "tricks.py"] if tricks else [])


def block_dir(recipe: Recipe, seed: int, threads: int) -> Path:
    """Where a seed block is trained and its results wait for their stages. The name holds everything
    the bits depend on besides the machine: the recipe, the code it runs, torch and the thread count."""
    import torch

    seeds = seed_block(recipe, seed)
    h = hashlib.sha256(f"{recipe.hash} {torch.__version__} {threads}".encode())
    for path in train_code(recipe):
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return paths.work_dir() / recipe.name / f"seeds{seeds[0]}-{seeds[-1]}-{h.hexdigest()[:16]}"


def _from_block(recipe: Recipe, seed: int, threads: int, progress: bool, force: bool):
    """`seed`'s metrics, env record and curves, training its whole block first unless a sibling seed's
    stage already did (same recipe, code, torch and threads: the same bits)."""
    from .families import get_family

    seeds = seed_block(recipe, seed)
    work = block_dir(recipe, seed, threads)
    with exclusive(work.with_suffix(".lock"), wait_for=f"training seeds {seeds[0]}-{seeds[-1]} of {recipe.name}"):
        done = work / f"seed{seed}" / "result.json"
        if force and done.exists():
            shutil.rmtree(work, ignore_errors=True)
        if not done.exists():
            ctxs = [RunContext(recipe, s, work, work / f"seed{s}" / "dvclive", threads, progress) for s in seeds]
            started = datetime.now(timezone.utc)
            t0 = time.perf_counter()
            results = get_family(recipe.family).train_block(recipe, seeds, ctxs, work)
            wall = time.perf_counter() - t0
            for s, ctx, r in zip(seeds, ctxs, results):
                env = capture_env(recipe, s, ctx, started, wall / len(seeds))
                env.update(seed_block=seeds, block_wall_seconds=round(wall, 2))
                write_json(work / f"seed{s}" / "result.json", {"metrics": r["metrics"], "env": env})
        result = read_json(done)
    env = result["env"]
    env["block_command"] = env["command"]
    env["command"] = shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])  # this stage's, not the trainer's
    return result["metrics"], env, work / f"seed{seed}" / "dvclive"


def _assemble(final: Path, metrics: dict, env: dict, recipe: Recipe, curves: Path, outputs: Path | None = None) -> None:
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_json(staging / "metrics.json", metrics)
    write_json(staging / "env.json", env)
    atomic_write_text(staging / "recipe.yaml", recipe.to_yaml())
    if env.get("git_dirty"):  # what the code was, beyond the revision: the uncommitted diff
        atomic_write_text(staging / "git.patch", _git("diff", "HEAD", "--binary") or "")
    if curves.exists():
        shutil.copytree(curves, staging / "dvclive")
    if outputs is not None and outputs.is_dir():
        for f in sorted(outputs.iterdir()):
            shutil.copy2(f, staging / f.name)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=paths.project_root(), capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def capture_env(recipe: Recipe, seed: int, ctx: RunContext, started: datetime, wall: float) -> dict:
    import resource

    import torch

    from .seeding import determinism_flags

    versions = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})"
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        **machine_record(),
        "uv_lock_sha256": _sha256(paths.project_root() / "uv.lock"),
        "dataset": dataset_hash(recipe),
        "recipe": recipe.name,
        "recipe_hash": recipe.hash,
        "recipe_files": [os.path.relpath(p, paths.project_root()) for p in recipe.chain],
        "seed": seed,
        "command": shlex.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": device,
        "cpu_count": os.cpu_count(),
        "determinism": determinism_flags(),
        "git_revision": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "resumed_from_iter": ctx.resumed_from,
        **ctx.record,
    }


def machine_record() -> dict:
    """What the same seed's bits depend on besides the code: the CPU model and the instruction sets its
    kernels use, torch's BLAS/oneDNN build, and the GPU with its CUDA, cuDNN and driver versions."""
    import torch

    rec: dict = {"cpu_model": platform.processor() or platform.machine(), "cpu_flags": []}
    with contextlib.suppress(OSError):
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
        if model:
            rec["cpu_model"] = model.group(1).strip()
        if flags:
            rec["cpu_flags"] = sorted(set(flags.group(1).split()) & KERNEL_FLAGS)
    with contextlib.suppress(Exception):
        rec["cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # the kernels torch dispatches to here
    config = torch.__config__.show()
    rec["blas"] = dict(re.findall(r"(BLAS_INFO|LAPACK_INFO|USE_MKLDNN|USE_OPENMP)=(\S+?),?\s", config))
    for key, pattern in (("mkl", r"Math Kernel Library Version (\S+)"), ("onednn", r"MKL-DNN v(\S+)"), ("openblas", r"OpenBLAS (\S+)")):
        if m := re.search(pattern, config):
            rec[key] = m.group(1)
    if torch.cuda.is_available():
        rec["gpu"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rec["cuda"], rec["cudnn"] = torch.version.cuda, torch.backends.cudnn.version()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            rec["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    return rec


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def dataset_hash(recipe: Recipe) -> dict | None:
    """sha256 over the prepared dataset's files (relative names and contents), and its size."""
    name = (recipe.config.get("dataset") or {}).get("name") if isinstance(recipe.config.get("dataset"), dict) else recipe.config.get("dataset")
    folder = paths.datasets_dir() / name if isinstance(name, str) else None
    if folder is None or not folder.is_dir():
        return None
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stamp = [(str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    cache = paths.work_dir().parent / "dataset_hashes.json"  # hashing COCO for every run would take minutes
    known = read_json(cache) if cache.exists() else {}
    key = hashlib.sha256(repr(stamp).encode()).hexdigest()
    if key not in known:
        h = hashlib.sha256()
        for f, (rel, _, _) in zip(files, stamp):
            h.update(rel.encode() + b"\0" + (_sha256(f) or "").encode())
        known[key] = {"name": name, "sha256": h.hexdigest(), "bytes": sum(size for _, size, _ in stamp)}
        with contextlib.suppress(OSError):
            write_json(cache, known)
    return known[key]
