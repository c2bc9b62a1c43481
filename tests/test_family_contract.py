"""Every family against the one contract (`reprozoo.family_api`): the Protocol's members, the tricks it
declares, and, end to end, a checkpoint trained here evaluated through `reprozoo eval`'s path with the
same number as the run's own test and a predictions file that gives that number back."""
import csv
import inspect
import json
import re
from pathlib import Path

import pytest

from reprozoo.family_api import EvalResult, Family
from reprozoo.families import family_names, get_family

FAMILIES = ["classification", "detection", "segmentation", "text"]
SRC = Path(__file__).resolve().parents[1] / "src/reprozoo"


def test_the_four_families_are_the_registered_ones():
    assert family_names() == FAMILIES


@pytest.mark.parametrize("name", FAMILIES)
def test_family_implements_every_member_of_the_protocol(name):
    fam = get_family(name)
    assert isinstance(fam, Family) and fam.name == name
    for member, proto in vars(Family).items():
        if member.startswith("_") or not callable(proto):
            continue
        impl = getattr(fam, member)
        want = list(inspect.signature(proto).parameters)[1:]  # without self
        got = list(inspect.signature(impl).parameters)
        assert got[:len(want)] == want, f"{name}.{member}{got} does not take {want}"
    assert isinstance(fam.tricks, frozenset) and isinstance(fam.distributed, bool)


def test_tricks_are_declared_by_families_and_every_trick_has_one():
    from reprozoo.tricks import TRICKS

    declared = set().union(*(get_family(f).tricks for f in FAMILIES))
    assert declared == set(TRICKS.names())
    assert "ema" in get_family("segmentation").tricks and "mixup" not in get_family("text").tricks


def test_the_core_names_no_family():
    """Only the family registry (families/__init__.py) knows the families' names; the core asks them."""
    names = re.compile(r"[\"'](classification|detection|segmentation|text)[\"']")
    offenders = [f"{p.name}: {m.group(0)}" for p in sorted(SRC.glob("*.py")) for m in names.finditer(p.read_text())]
    assert offenders == []


def _last_checkpoint(work: Path) -> Path:
    ckpts = sorted(work.rglob("*.pth"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    assert ckpts, f"no checkpoint under {work}"
    return ckpts[-1]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _train(recipe, project: Path):
    from reprozoo.runs import RunContext

    ctx = RunContext(recipe, 0, project / "work", project / "work/dvclive", 1, progress=False)
    return ctx, get_family(recipe.family).train(recipe, 0, ctx)


def _evaluate(recipe, checkpoint: Path):
    from reprozoo.checkpoints import check_checkpoint

    return check_checkpoint(recipe, checkpoint, published=50.0, source="test", name="contract")


def test_classification_checkpoint_eval_matches_the_run_and_its_predictions(project):
    from reprozoo.recipes import load_recipe

    recipe = load_recipe("tiny_mlp")
    ctx, metrics = _train(recipe, project)
    rows = _rows(ctx.outputs / "predictions.csv")
    assert len(rows) == 1000 and list(rows[0]) == ["id", "label", "prediction", "score", "loss"]
    assert 100 * sum(r["label"] == r["prediction"] for r in rows) / len(rows) == pytest.approx(metrics["test"]["accuracy"])
    result = _evaluate(recipe, _last_checkpoint(project / "work"))
    assert result["metric"] == "accuracy" and result["value"] == pytest.approx(metrics["test"]["accuracy"])
    assert result["correct"] == sum(r["label"] == r["prediction"] for r in rows) and "ci_low" in result  # exact binomial CI
    again = _rows(project / "reports/checks" / result["predictions"])
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]


def test_segmentation_checkpoint_eval_matches_the_run_and_its_pixel_counts(project, data_root):
    import numpy as np

    from test_segmentation import make_drive, tiny

    make_drive(data_root)
    recipe = tiny(project)
    ctx, metrics = _train(recipe, project)
    rows = _rows(ctx.outputs / "predictions.csv")
    assert len(rows) == 2 and list(rows[0]) == ["id", "image", "c0_0", "c0_1", "c1_0", "c1_1"]
    c = np.array([[int(r[k]) for k in ("c0_0", "c0_1", "c1_0", "c1_1")] for r in rows]).sum(0)
    dice = 100 * 2 * c[3] / (2 * c[3] + c[1] + c[2])  # vessel Dice from the summed per-image counts
    assert dice == pytest.approx(metrics["test"]["Dice"])
    result = _evaluate(recipe, _last_checkpoint(project / "work"))
    assert result["metric"] == "Dice" and result["value"] == pytest.approx(metrics["test"]["Dice"])
    assert result["subset"] and result["bootstrap"]["replicates"] == 200  # 2 of DRIVE's images: sampling error added


def test_detection_checkpoint_eval_matches_the_run_and_writes_coco_results(project, data_root):
    from test_detection import make_coco, tiny

    make_coco(data_root)
    recipe = tiny(project, epochs=1)
    ctx, metrics = _train(recipe, project)
    dets = json.loads((ctx.outputs / "predictions.bbox.json").read_text())
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} and len(d["bbox"]) == 4 for d in dets)
    result = _evaluate(recipe, _last_checkpoint(project / "work"))
    assert result["metric"] == "AP" and result["value"] == pytest.approx(metrics["test"]["AP"])
    assert json.loads((project / "reports/checks" / result["predictions"]).read_text()) == dets


def test_text_checkpoint_eval_matches_the_run_and_its_predictions(project, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from conftest import write
    from reprozoo.recipes import load_recipe
    from test_text import TINY_TEXT, _sst2_like

    store = tmp_path / "store"
    _sst2_like(store)
    monkeypatch.setenv("REPROZOO_DATA", str(store))
    write(project / "recipes/text/tiny_sst2.yaml", TINY_TEXT.format(vocab=store / "vocab.txt", epochs=2, extra=""))
    recipe = load_recipe("tiny_sst2")
    ctx, metrics = _train(recipe, project)
    rows = _rows(ctx.outputs / "predictions.csv")
    assert len(rows) == 64 and 100 * sum(r["label"] == r["prediction"] for r in rows) / 64 == pytest.approx(metrics["dev"]["accuracy"])
    last = max((project / "work").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    ckpt = project / "tiny_sst2.pth"  # the Trainer's safetensors as the PyTorch state dict `reprozoo eval` takes
    torch.save(load_file(last / "model.safetensors"), ckpt)
    result = _evaluate(recipe, ckpt)
    assert result["metric"] == "accuracy" and result["value"] == pytest.approx(metrics["dev"]["accuracy"])
    assert result["correct"] == sum(r["label"] == r["prediction"] for r in rows)


def test_eval_result_is_what_the_core_reads():
    r = EvalResult(split="test", total=10, metric="accuracy", value=70.0, correct=7, predictions=Path("/x/predictions.csv"))
    assert r.to_dict()["predictions"] == "/x/predictions.csv" and r.to_dict()["bootstrap"] is None
