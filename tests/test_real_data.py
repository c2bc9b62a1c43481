"""The committed published-checkpoint reports (issue 4), checked in CI.

Everywhere: each report's verdict and interval follow from its own counts. Where the shared data store
is present (`REPROZOO_DATA`, else `../shared/data`, as on this project's machines): the checkpoint is
evaluated again through the recipe's test pipeline on the real CIFAR-10 images and must give the
committed counts, and the checkpoint must be the file the report names (md5).
"""
import hashlib
import json
import os
from pathlib import Path

import pytest

from reprozoo.checkpoints import binomial_verdict
from reprozoo.families.classification.engine import evaluate
from reprozoo.recipes import load_recipe

from conftest import REPO

REPORTS = sorted((REPO / "reports/checks").glob("*--*.json"))
SHARED = Path(os.environ.get("REPROZOO_DATA") or REPO.parent / "shared/data")


def test_there_are_committed_checkpoint_reports():
    assert {p.name for p in REPORTS} >= {"cifar10_resnet20_akamaster--resnet20-12fca82f.json",
                                         "cifar10_resnet56_akamaster--resnet56-4bfd9763.json"}


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.stem)
def test_committed_checkpoint_report_is_reproduced(report, project, monkeypatch):
    r = json.loads(report.read_text())
    again = binomial_verdict(r["correct"], r["total"], r["published"], tolerance=r["tolerance"], margin=r["margin"])
    assert again["verdict"] == r["verdict"]
    assert (again["ci_low"], again["ci_high"]) == pytest.approx((r["ci_low"], r["ci_high"]), abs=1e-9)
    ckpt = SHARED / "cifar10/akamaster_weights" / r["checkpoint"]
    if ckpt.exists():  # the real-data half: the same images and weights give the same counts
        assert hashlib.md5(ckpt.read_bytes()).hexdigest() == r["checkpoint_md5"]
        monkeypatch.setenv("REPROZOO_DATA", str(SHARED))
        ev = evaluate(load_recipe(r["recipe"]), ckpt, project / "predictions")
        assert (ev.correct, ev.total, ev.split) == (r["correct"], r["total"], r["split"])
        rows = (project / "predictions/predictions.csv").read_text().splitlines()[1:]  # id,label,prediction,...
        assert len(rows) == r["total"] and sum(x.split(",")[1] == x.split(",")[2] for x in rows) == r["correct"]
