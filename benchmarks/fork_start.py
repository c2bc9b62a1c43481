"""What starting a train stage costs, as a process of its own (shell) and forked from `reprozoo repro`'s
preloaded server: the time from submitting `reprozoo run RECIPE --seed N` to its exit, for a run that is
already finished (so the command loads its recipe and stops: the start-up alone, as for a seed that only
takes its block's result). Run it in a project where that run is done:

    uv run python benchmarks/fork_start.py mnist1d_logreg --seed 1 --times 6
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from reprozoo.executors import Job, LocalExecutor, wait_any


def per_command(ex: LocalExecutor, cmd: str, times: int, logs: Path) -> float:
    t = time.perf_counter()
    for i in range(times):
        ex.submit(Job(f"j{i}", cmd, Path.cwd(), logs / f"{i}.log"))
        rc = wait_any(ex, 0.01)[f"j{i}"]
        if rc != 0:
            raise SystemExit(f"{cmd}: exit {rc}: {(logs / f'{i}.log').read_text()}")
    return (time.perf_counter() - t) / times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--times", type=int, default=6)
    a = p.parse_args()
    cmd = f"reprozoo run {a.recipe} --seed {a.seed}"
    with tempfile.TemporaryDirectory() as tmp:
        shell = per_command(LocalExecutor(fork=False), cmd, a.times, Path(tmp))
        forked = LocalExecutor()
        first = per_command(forked, cmd, 1, Path(tmp))  # includes the server's own start and preloading
        rest = per_command(forked, cmd, a.times, Path(tmp))
    print(f"{cmd}: shell {shell:.2f} s per command; forked: first {first:.2f} s (server start), then {rest:.2f} s per command")


if __name__ == "__main__":
    main()
