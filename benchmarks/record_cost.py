"""What recording finished runs in dvc.lock costs: `repro.record` (one batch) against one DVC commit per run.

Copies the project (tracked files, runs/, datasets/, .dvc/) to a scratch folder, removes the train stages of
the default pipeline from its dvc.lock, then records most of them in one batch and the last `--single` one
DVC `commit --force` at a time, as `reprozoo repro` did before batching. Needs the default's runs.

    uv run python benchmarks/record_cost.py --single 10
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--single", type=int, default=10)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="record_cost-"))
    for f in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines():
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, root / f)
    for d in ("runs", "datasets", ".dvc"):
        shutil.copytree(REPO / d, root / d, dirs_exist_ok=True)
    subprocess.run("git init -q && git add -A && git -c user.email=b@b -c user.name=b commit -qm copy", shell=True, cwd=root, check=True)
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    lock["stages"] = {k: v for k, v in lock["stages"].items() if not k.startswith("train_")}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    os.environ["REPROZOO_ROOT"] = str(root)
    os.chdir(root)
    from reprozoo import repro

    with repro._dvc_repo() as repo:
        stages = [s for s in repo.index.stages if repro._is_train(s) and Path(s.dvcfile.path) == root / "dvc.yaml"]
        plan = repro.Plan(["dvc.yaml"])
        for s in stages:
            plan.recipes[s.addressing] = (repro.recipe_ref(s.cmd), None)
            plan.hashes[s.addressing] = repro._dep_hashes(s)
    addrs = [s.addressing for s in stages]
    batch, single = addrs[:-args.single], addrs[-args.single:]
    t = time.perf_counter()
    why = repro.record(batch, plan)
    tb = time.perf_counter() - t
    assert not any(why.values()), why
    ts = []
    for a in single:
        t = time.perf_counter()
        with repro._dvc_repo() as repo:
            repo.commit(a, force=True)
        ts.append(time.perf_counter() - t)
    print(f"record() of {len(batch)} runs in one batch: {tb:.1f} s ({tb / len(batch):.2f} s per run); one DVC commit "
          f"per run, {len(single)} runs into a dvc.lock already holding {len(batch)}: {sum(ts) / len(ts):.1f} s per run "
          f"(min {min(ts):.1f}, max {max(ts):.1f})")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
