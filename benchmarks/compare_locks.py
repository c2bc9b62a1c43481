"""Compare two copies of a project after a pipeline run in each (e.g. serial `dvc repro` in one,
`reprozoo repro --jobs 2` in the other), as tests/test_repro.py does on a tiny pipeline: the same
stages, commands, parameters and dependency hashes in `dvc.lock`, the same hashes for every output
except run directories and reports (a run's env.json holds its wall time), and bitwise the same
`metrics.json` in every run directory.

    uv run python benchmarks/compare_locks.py /tmp/ser /tmp/par
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reprozoo.repro import lock_without_run_hashes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    a, b = lock_without_run_hashes(args.a / "dvc.lock"), lock_without_run_hashes(args.b / "dvc.lock")
    problems = [f"stage only in {args.a}: {s}" for s in sorted(a.keys() - b.keys())]
    problems += [f"stage only in {args.b}: {s}" for s in sorted(b.keys() - a.keys())]
    problems += [f"stage differs: {s}" for s in sorted(a.keys() & b.keys()) if a[s] != b[s]]
    metrics = sorted(p.relative_to(args.a) for p in (args.a / "runs").glob("*/seed*/metrics.json"))
    differ = [str(m) for m in metrics if not (args.b / m).is_file() or (args.a / m).read_bytes() != (args.b / m).read_bytes()]
    problems += [f"metrics differ: {m}" for m in differ]
    print(f"{len(a)} stages in {args.a / 'dvc.lock'}, {len(b)} in {args.b / 'dvc.lock'}; "
          f"{len(metrics) - len(differ)} of {len(metrics)} metrics.json bitwise equal")
    print("\n".join(problems) if problems else "same stages, commands, params and dependency hashes")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
