"""What is checked before a run starts, so that a bad setup fails in a second rather than after the
training: the run directory can be written and has room, no other process is running the same run,
and the checkpoint an unfinished run would resume from is intact (`--force` starts over instead).

`execute` wraps `runs.execute` with these checks; the CLI and the ablation runner go through it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from . import distributed, paths
from .errors import RunError
from .recipes import Recipe

MIN_FREE_MIB = 200  # checkpoints and curves of the small runs; a full disk would only show at the final write


def work_dir(recipe: Recipe, seed: int) -> Path:
    """Where `runs.execute` keeps the run's checkpoints until it finishes (the same formula)."""
    return paths.work_dir() / recipe.name / f"seed{seed}-{recipe.hash}"


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise RunError(f"{folder}: cannot write there ({e.strerror}); the run would fail at its first checkpoint "
                       "or its final write") from None
    free = shutil.disk_usage(folder).free / 2**20
    if free < MIN_FREE_MIB:
        raise RunError(f"{folder}: only {free:.0f} MiB free (a run needs at least {MIN_FREE_MIB} MiB); free space first")


def damaged(path: Path) -> str | None:
    """Why the checkpoint file `path` cannot be read back, or None. Reads no pickle: torch's files are
    zip archives (every member's CRC is checked), safetensors files declare their own length."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[:2] == b"PK":
                with zipfile.ZipFile(f) as z:
                    bad = z.testzip()
                return f"member {bad} is corrupt" if bad else None
            if path.suffix == ".safetensors":
                n = int.from_bytes(head, "little")
                header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                size = path.stat().st_size
                return None if size >= 8 + n + end else f"truncated: {size} bytes, the header says {8 + n + end}"
            if path.suffix in (".pth", ".pt", ".bin"):  # torch.save has written zip archives since PyTorch 1.6
                return "not a zip archive as torch.save writes"
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, TypeError, EOFError) as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None if path.stat().st_size else "empty file"


def resume_files(work: Path) -> list[Path]:
    """The checkpoint files an unfinished run in `work` would resume from (MMEngine or HF Trainer layout)."""
    marker = work / "last_checkpoint"  # MMEngine writes the path of its newest checkpoint here
    if marker.is_file():
        p = Path(marker.read_text().strip())
        return [p] if p.exists() else []
    steps = sorted((int(d.name.split("-")[1]), d) for d in work.glob("checkpoint-*") if d.name.split("-")[1].isdigit())
    if steps:  # HF Trainer: the newest checkpoint-N folder (training_args.bin is HF's own pickle, not a tensor file)
        return sorted(p for p in steps[-1][1].iterdir() if p.suffix in (".pt", ".pth", ".bin", ".safetensors"))
    return []


def check_prepared(recipe: Recipe) -> None:
    """Every NumPy array of the recipe's prepared dataset must be whole (memory-mapping checks the header
    against the file size without reading the data)."""
    import numpy as np

    from .datasets_store import prepared_dir

    name = (recipe.config.get("dataset") or {}).get("name")
    folder = prepared_dir(name) if isinstance(name, str) else None
    for f in sorted(folder.glob("*.npy")) if folder is not None and folder.is_dir() else []:
        try:
            np.load(f, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise RunError(f"{f}: damaged prepared data ({' '.join(str(e).split())[:150]}); "
                           f"`reprozoo prepare {name} --force` rebuilds it") from None


def check(recipe: Recipe, seed: int, *, force: bool) -> None:
    from .runs import run_dir

    check_prepared(recipe)
    _writable(run_dir(recipe.name, seed).parent)
    work = work_dir(recipe, seed)
    _writable(paths.work_dir())
    if force:  # --force starts over: the run does not resume from a checkpoint either
        shutil.rmtree(work, ignore_errors=True)
        return
    for ckpt in resume_files(work) if work.is_dir() else []:
        if why := damaged(ckpt):
            raise RunError(f"{ckpt}: the checkpoint this run would resume from is damaged ({why}); "
                           f"`reprozoo run {recipe.name} --seed {seed} --force` starts the run over")


@contextlib.contextmanager
def claimed(recipe: Recipe, seed: int):
    """Hold a lock on `runs/<recipe>/seed<N>` (a file in `.reprozoo/locks/`) for the whole run: two processes
    running one recipe name and seed, even with different recipe contents, would otherwise let the second
    replace the first's results."""
    from .runs import run_dir

    final = run_dir(recipe.name, seed)
    lock = paths.locks_dir() / recipe.name / f"seed{seed}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            raise RunError(f"{final} is being trained right now by {who}; wait for it to finish (or stop it)") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        yield


def execute(recipe: Recipe, seed: int, *, force: bool = False, threads: int | None = None, progress: bool = True,
            record_divergence: bool = False) -> dict:
    """`runs.execute` after the checks above, holding the run's lock."""
    from . import runs

    env = os.environ.get("REPROZOO_THREADS")
    if threads is None and env is not None and not (env.strip().isdigit() and int(env) >= 1):
        raise RunError(f"REPROZOO_THREADS={env!r}: expected a positive integer (torch CPU threads per run)")
    devices = recipe.config.get("devices", 1)
    rank, size = distributed.world()
    if devices > 1 and size == 1:  # this process becomes the launcher: torchrun starts the ranks
        return _launch(recipe, seed, devices, force=force, threads=threads, progress=progress, record_divergence=record_divergence)
    if size != devices:
        raise RunError(f"{recipe.name} asks for devices: {devices}, this process group has {size} "
                       f"(`reprozoo run {recipe.name}` starts the right number)")
    if size > 1:
        distributed.init()
        if rank > 0:
            distributed.barrier()  # rank 0 has checked and claimed the run, and removed what --force starts over
            return runs.execute(recipe, seed, force=False, threads=threads, progress=False, record_divergence=record_divergence)
    with claimed(recipe, seed):
        check(recipe, seed, force=force)
        if size > 1:
            distributed.barrier()
        return runs.execute(recipe, seed, force=force, threads=threads, progress=progress, record_divergence=record_divergence)


def _launch(recipe: Recipe, seed: int, devices: int, *, force: bool, threads, progress: bool, record_divergence: bool) -> dict:
    """Train a `devices: N` recipe as N torchrun processes; its metrics."""
    from .io import read_json
    from .runs import run_dir

    argv = ["run", str(recipe.path), "--seed", str(seed)] + ["--force"] * force + ["--no-progress"] * (not progress) \
        + ["--record-divergence"] * record_divergence
    if threads is not None:
        argv += ["--threads", str(threads)]
    code = distributed.launch(devices, argv)
    if code != 0:
        raise RunError(f"{recipe.name} seed {seed}: the {devices} torchrun processes ended with exit status {code} "
                       "(their output is above)")
    return read_json(run_dir(recipe.name, seed) / "metrics.json")
