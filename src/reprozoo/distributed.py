"""One run on several devices: `devices: N` in a recipe runs it as N processes under torchrun (DDP).

`reprozoo run` (and everything that trains through `preflight.execute`) starts
`torchrun --standalone --nproc-per-node=N -m reprozoo.cli run ...` when a recipe asks for more than one
device; inside, every rank trains, rank 0 alone checks, claims and writes the run directory. The
process group is gloo on a CPU and NCCL on GPUs (each rank on `LOCAL_RANK`, within the GPUs the
caller's `CUDA_VISIBLE_DEVICES` gives). The recipe's batch size is the total over all devices: each
device takes its share, so the optimizer sees the published batch and learning rate unchanged.
"""
from __future__ import annotations

import os
import subprocess
import sys


def world() -> tuple[int, int]:
    """(rank, world size) of this process: torchrun's environment, else (0, 1)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init() -> str:
    """Join torchrun's process group (once); its backend."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_backend()


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def launch(devices: int, argv: list[str]) -> int:
    """Run `reprozoo ARGV` as `devices` processes under torchrun; its exit status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
           "-m", "reprozoo.cli", *argv]
    return subprocess.run(cmd).returncode


def shares(total: int, devices: int) -> dict:
    """What env.json records of a DDP run: the recipe's batch is the total, split evenly."""
    return {"world_size": devices, "batch_per_device": total // devices, "effective_batch": total,
            "lr_scale": 1.0}
