"""The detection family: COCO and balloon data in their official formats, a reduced Faster R-CNN
trained and evaluated through the zoo's own config, exact resume, checkpoint evaluation with a
verdict, the tricks against the zoo's configs, offline backbone weights, and errors that name the
file and key."""
import json
import urllib.error
import zipfile

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from conftest import write
from reprozoo.errors import ConfigError, ReprozooError

SIZE = 128
CLASSES = {1: "person", 3: "car"}  # COCO ids and names: the configs keep COCO's 80 classes


def _picture(rng, n_objects: int):
    """Grey noise with bright rectangles (person) and dark ellipses (car); their COCO boxes."""
    img = Image.fromarray(rng.integers(90, 140, (SIZE, SIZE, 3), dtype=np.uint8))
    draw, anns = ImageDraw.Draw(img), []
    for _ in range(n_objects):
        w, h = (int(v) for v in rng.integers(24, 48, 2))
        x, y = (int(v) for v in rng.integers(0, SIZE - 48, 2))
        cat = int(rng.choice(list(CLASSES)))
        (draw.rectangle if cat == 1 else draw.ellipse)([x, y, x + w, y + h], fill=(240, 240, 40) if cat == 1 else (20, 20, 120))
        anns.append(dict(category_id=cat, bbox=[x, y, w, h], area=float(w * h), iscrowd=0))
    return img, anns


def coco_categories() -> list[dict]:
    """All 80 COCO classes (the file lists them even where no image shows one), numbered 1..80."""
    from mmdet.datasets import CocoDataset

    cats = [dict(id=i, name=n) for i, n in enumerate(CocoDataset.METAINFO["classes"], start=1)]
    assert all(cats[k - 1]["name"] == v for k, v in CLASSES.items())
    return cats


def make_coco(root, n_train: int = 8, n_val: int = 4, zipped: bool = False):
    """COCO 2017's official layout under <root>/coco: annotations/instances_{train,val}2017.json and
    the image folders, or the three official zips holding them."""
    d = root / "coco"
    rng = np.random.default_rng(0)
    staging = root / "_coco" if zipped else d
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        images, annotations = [], []
        (staging / split).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            img, anns = _picture(rng, 2)
            name = f"{i:012d}.jpg"
            img.save(staging / split / name, quality=95)
            images.append(dict(id=i, file_name=name, height=SIZE, width=SIZE))
            annotations += [dict(a, id=len(annotations) + k, image_id=i) for k, a in enumerate(anns, start=1)]
        write(staging / f"annotations/instances_{split}.json",
              json.dumps(dict(images=images, annotations=annotations, categories=coco_categories())))
    if zipped:
        d.mkdir(parents=True)
        for folder, archive in (("annotations", "annotations_trainval2017.zip"), ("train2017", "train2017.zip"), ("val2017", "val2017.zip")):
            with zipfile.ZipFile(d / archive, "w") as z:
                for f in sorted((staging / folder).rglob("*")):
                    z.write(f, f.relative_to(staging))
    return d


def _via(regions_per_image: dict, folder) -> dict:
    """A VIA 2.x project: {key: {filename, size, regions: {"0": {shape_attributes, region_attributes}}}}."""
    out = {}
    for name, polys in regions_per_image.items():
        out[name + "123"] = dict(filename=name, size=123, file_attributes={}, regions={
            str(i): dict(shape_attributes=dict(name="polygon", all_points_x=xs, all_points_y=ys), region_attributes={})
            for i, (xs, ys) in enumerate(polys)})
        Image.new("RGB", (40, 30)).save(folder / name)
    return out


def test_via_to_coco_against_hand_made_annotations(tmp_path):
    from reprozoo.families.detection.data import via_to_coco

    via = _via({"a.jpg": [([1, 11, 11, 1], [2, 2, 22, 22]), ([0, 4, 0], [0, 0, 3])], "b.jpg": []}, tmp_path)
    coco = via_to_coco(via, tmp_path, "balloon")
    assert coco["categories"] == [{"id": 1, "name": "balloon"}]
    assert coco["images"] == [dict(id=1, file_name="a.jpg", height=30, width=40), dict(id=2, file_name="b.jpg", height=30, width=40)]
    square, triangle = coco["annotations"]
    assert square == dict(id=1, image_id=1, category_id=1, iscrowd=0, bbox=[1, 2, 10, 20], area=200.0,
                          segmentation=[[1.5, 2.5, 11.5, 2.5, 11.5, 22.5, 1.5, 22.5]])
    assert triangle["bbox"] == [0, 0, 4, 3] and triangle["area"] == 6.0  # the polygon's area, not the box's 12


def test_balloon_is_converted_and_counted(project, data_root, monkeypatch):
    from reprozoo.datasets_store import prepare
    from reprozoo.families.detection.data import Balloon

    for split, n in (("train", 3), ("val", 2)):
        (data_root / "balloon" / split).mkdir(parents=True)
        via = _via({f"{split}{i}.jpg": [([1, 11, 11], [2, 2, 22])] * 2 for i in range(n)}, data_root / "balloon" / split)
        write(data_root / "balloon" / split / "via_region_data.json", json.dumps(via))
    with pytest.raises(ReprozooError, match=r"balloon/train: 3 images with 6 regions, expected \(61, 255\)"):
        prepare("detection", "balloon")
    assert not (project / "datasets/balloon").exists()
    monkeypatch.setattr(Balloon, "sizes", {"train": (3, 6), "val": (2, 4)})
    out = prepare("detection", "balloon")
    coco = json.loads((out / "train/annotation_coco.json").read_text())
    assert len(coco["images"]) == 3 and (out / "train/train0.jpg").is_file()


def test_coco_from_folders_or_zips_with_md5_checked(project, data_root, monkeypatch):
    from reprozoo.datasets_store import prepare
    from reprozoo.families.detection.data import Coco2017
    from reprozoo.fetch import md5sum

    make_coco(data_root, zipped=True)
    with pytest.raises(ReprozooError, match=r"annotations_trainval2017.zip: md5 \w+ does not match cocodataset.org's f4bbac64"):
        prepare("detection", "coco2017")
    real = {k: (a, md5sum(data_root / "coco" / a)) for k, (a, _) in Coco2017.archives.items()}
    monkeypatch.setattr(Coco2017, "archives", real)
    out = prepare("detection", "coco2017")
    assert len(list((out / "train2017").glob("*.jpg"))) == 8 and (out / "annotations/instances_val2017.json").is_file()

    (data_root / "coco/val2017").mkdir()  # an extracted folder wins over the zip; a missing image is named
    with pytest.raises(ReprozooError, match=r"instances_val2017.json lists 4 images missing from .*val2017 \(first: 000000000001.jpg\)"):
        prepare("detection", "coco2017", force=True)


# A reduced Faster R-CNN (ResNet-18, 32-channel FPN) on the synthetic COCO: the zoo config with its sizes overridden.
TINY = """\
extends: faster_rcnn_r50_fpn_1x_coco
description: "test: reduced Faster R-CNN on synthetic COCO"
dataset: {{name: coco2017, val_images: 3}}
backbone_weights: none
overrides:
  model.backbone.depth: 18
  model.neck.in_channels: [64, 128, 256, 512]
  model.neck.out_channels: 32
  model.rpn_head.in_channels: 32
  model.rpn_head.feat_channels: 32
  model.roi_head.bbox_roi_extractor.out_channels: 32
  model.roi_head.bbox_head.in_channels: 32
  model.roi_head.bbox_head.fc_out_channels: 64
  model.test_cfg.rcnn.score_thr: 0.0  # an untrained detector's boxes still reach the evaluation
{extra}  train_dataloader.dataset.pipeline.2.scale: [{s}, {s}]
  val_dataloader.dataset.pipeline.1.scale: [{s}, {s}]
  test_dataloader.dataset.pipeline.1.scale: [{s}, {s}]
schedule: {{epochs: {epochs}, batch_size: 2, num_workers: 1}}
log_interval: 1
"""


def tiny(project, name="tiny_frcnn", epochs=2, extra=""):
    from reprozoo.recipes import load_recipe

    write(project / f"recipes/detection/{name}.yaml", TINY.format(s=SIZE, epochs=epochs, extra=extra))
    return load_recipe(name)


def test_reduced_faster_rcnn_trains_evaluates_and_records(project, data_root):
    from reprozoo.families.detection.engine import runner_config
    from reprozoo.runs import RunContext, execute, run_dir

    make_coco(data_root)
    recipe = tiny(project)
    cfg, _ = runner_config(recipe, 0, RunContext(recipe, 0, project / "w", project / "w/dvclive", threads=1))
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        assert (cfg[key].num_workers, cfg[key].dataset.data_root) == (1, str(project / "datasets/coco2017")), key
    assert cfg.val_dataloader.dataset.indices == 3 and "indices" not in cfg.train_dataloader.dataset
    # 2 epochs of the 1x schedule: the steps at epochs 8 and 11 of 12 move to 1 and 2
    assert cfg.train_cfg.max_epochs == 2 and cfg.param_scheduler[1].milestones == [1, 2]
    assert cfg.model.backbone.init_cfg is None and cfg.model.backbone.frozen_stages == -1 and cfg.model.backbone.norm_eval is False
    metrics = execute(recipe, 0, progress=False)["test"]
    # no object is large (> 96^2): COCOeval has no APl to give, so there is none
    assert {"AP", "AP50", "AP75"} <= set(metrics) <= {"AP", "AP50", "AP75", "APs", "APm"}
    assert all(0 <= v <= 100 for v in metrics.values())
    d = run_dir("tiny_frcnn", 0)
    params = yaml.safe_load((d / "dvclive/params.yaml").read_text())
    # 2 images a step instead of the zoo's 8 x 2: lr 0.02 x 2/16, recorded with what was published
    assert params["batch_size"] == 2 and params["published_batch_size"] == 16 and params["published_epochs"] == 12
    assert params["lr"] == pytest.approx(0.0025) and params["published_lr"] == 0.02 and params["epochs"] == 2
    assert params["backbone_weights"] == "none" and "from scratch" in params["warning"]
    steps = [int(r.split("\t")[0]) for r in (d / "dvclive/plots/metrics/AP.tsv").read_text().splitlines()[1:]]
    assert steps == [4, 8]  # validation after each epoch of 4 iterations, logged at the iteration
    losses = (d / "dvclive/plots/metrics/loss_rpn_cls.tsv").read_text().splitlines()[1:]
    assert len(losses) == 8
    norms = [r.split("\t") for r in (d / "dvclive/plots/metrics/grad_norm.tsv").read_text().splitlines()[1:]]
    assert [int(s) for s, _ in norms] == list(range(1, 9)) and all(0 < float(v) < float("inf") for _, v in norms)  # every step
    from reprozoo.reports import curve_report

    _, md = curve_report("tiny_frcnn", 0)  # the eval metric of the curve is the run's first: AP
    assert "| iteration | eval AP |" in md.read_text() and "| 8 | " in md.read_text()


def test_same_seed_is_bitwise_resume_matches_and_checkpoint_eval_gives_a_verdict(project, data_root, monkeypatch):
    from reprozoo import paths
    from reprozoo.checkpoints import check_checkpoint
    from reprozoo.frameworks.mmrunner import ProgressBarHook
    from reprozoo.io import read_json
    from reprozoo.runs import execute, run_dir

    make_coco(data_root)
    recipe = tiny(project)
    first = execute(recipe, 0, progress=False)
    assert execute(recipe, 0, force=True, progress=False) == first

    original = ProgressBarHook.after_train_iter

    def crash(self, runner, *a, **k):
        original(self, runner, *a, **k)
        if runner.iter == 6:  # the checkpoint of epoch 1 (iteration 4) is on disk
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBarHook, "after_train_iter", crash)
    with pytest.raises(KeyboardInterrupt):
        execute(recipe, 0, force=True, progress=False)
    ckpt = next(paths.work_dir().glob("tiny_frcnn/seed0-*/epoch_1.pth"))
    saved = project / "epoch_1.pth"
    saved.write_bytes(ckpt.read_bytes())
    monkeypatch.setattr(ProgressBarHook, "after_train_iter", original)
    resumed = execute(recipe, 0, force=True, progress=False)
    assert read_json(run_dir("tiny_frcnn", 0) / "env.json")["resumed_from_iter"] == 4
    assert resumed == first
    steps = [int(r.split("\t")[0]) for r in (run_dir("tiny_frcnn", 0) / "dvclive/plots/metrics/AP.tsv").read_text().splitlines()[1:]]
    assert steps == [4, 8]

    # `reprozoo eval` on a 3-image subset: the AP of the checkpoint with a bootstrap interval over images
    r = check_checkpoint(recipe, saved, published=50.0, source="test", tolerance=0.05, margin=0.3, name="tiny")
    assert r["metric"] == "AP" and r["total"] == 3 and r["bootstrap"]["replicates"] == 200
    assert r["ci_low"] <= r["value"] <= r["ci_high"] and r["verdict"] in ("below", "inconclusive", "above", "reproduced")
    assert "percentile bootstrap over the 3 evaluated images" in (project / "reports/checks/tiny.md").read_text()


def test_bootstrap_of_a_perfect_detector_and_the_metric_on_a_subset():
    from pycocotools.coco import COCO

    from reprozoo.families.detection.metrics import bootstrap_ap, coco_eval

    rng = np.random.default_rng(1)
    gt = dict(images=[dict(id=i, height=SIZE, width=SIZE) for i in (1, 2, 3)], categories=[dict(id=1, name="person")],
              annotations=[dict(id=i, image_id=i, category_id=1, bbox=[10, 10, 40, 40], area=1600.0, iscrowd=0) for i in (1, 2, 3)])
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    perfect = [dict(image_id=i, category_id=1, bbox=[10, 10, 40, 40], score=0.9) for i in (1, 2)]
    ev = coco_eval(coco, perfect, [1], [1, 2])  # only the evaluated images count: image 3 is not a miss
    assert ev.stats[0] == pytest.approx(1.0)
    assert np.allclose(bootstrap_ap(ev, 20), 100.0)
    half = perfect + [dict(image_id=3, category_id=1, bbox=[80, 80, 20, 20], score=0.95)]
    ev = coco_eval(coco, half, [1], [1, 2, 3])
    boot = bootstrap_ap(ev, 300, seed=int(rng.integers(100)))
    assert boot.min() < 100 * ev.stats[0] < boot.max() or np.ptp(boot) > 0


def test_tricks_patch_the_config_as_the_zoo_writes_them(project):
    import mmdet.utils

    from reprozoo.families.detection import tricks
    from reprozoo.families.detection.engine import load
    from reprozoo.families.openmmlab import load_config
    from reprozoo.recipes import load_recipe

    mmdet.utils.register_all_modules(init_default_scope=False)
    write(project / "recipes/detection/frcnn_tricks.yaml",
          "extends: faster_rcnn_r50_fpn_1x_coco\ntricks: [giou_loss, multiscale_train, ema, longer_schedule, hflip_tta]\n")
    r = load_recipe("frcnn_tricks")
    cfg = load(r.config, r.path)
    hooks = tricks.patch_config(cfg, r.config["tricks"])
    giou = load_config("mmdet::faster_rcnn/faster-rcnn_r50_fpn_giou_1x_coco.py", None)
    assert cfg.model.roi_head.bbox_head == giou.model.roi_head.bbox_head
    ms = load_config("mmdet::faster_rcnn/faster-rcnn_r50-caffe_fpn_ms-1x_coco.py", None)
    assert cfg.train_dataloader.dataset.pipeline[2] == ms.train_dataloader.dataset.pipeline[2]  # short edges 640..800 by 32
    assert hooks == [dict(type="EMAHook", ema_type="ExpMomentumEMA", momentum=0.0002, update_buffers=True, priority=49)]
    assert tricks.patch_recipe(r.config)["schedule"]["epoch_factor"] == 2.0
    tta = tricks.flip_tta_pipeline(cfg.test_dataloader.dataset.pipeline)
    assert [[t["type"] for t in step] for step in tta[1]["transforms"]] == [["Resize"], ["RandomFlip", "RandomFlip"], ["LoadAnnotations"], ["PackDetInputs"]]
    assert tta[1]["transforms"][-1][0]["meta_keys"][-2:] == ("flip", "flip_direction")

    write(project / "recipes/detection/giou_twice.yaml", "extends: faster_rcnn_r50_fpn_1x_coco\ntricks: [giou_loss]\n"
          "config: mmdet::faster_rcnn/faster-rcnn_r50_fpn_giou_1x_coco.py\n")
    with pytest.raises(ConfigError, match=r"giou_twice.yaml.*tricks\[0\].*already regresses boxes with GIoULoss"):
        load_recipe("giou_twice")


def test_longer_schedule_is_the_zoos_2x_and_balloon_resizes_the_box_head(project, data_root):
    from reprozoo.families.detection.engine import runner_config
    from reprozoo.families.openmmlab import load_config
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import RunContext

    make_coco(data_root)
    write(project / "recipes/detection/frcnn_long.yaml", "extends: faster_rcnn_r50_fpn_1x_coco\nbackbone_weights: none\ntricks: [longer_schedule]\n")
    r = load_recipe("frcnn_long")
    cfg, params = runner_config(r, 0, RunContext(r, 0, project / "w", project / "w/dvclive", threads=1))
    zoo2x = load_config("mmdet::faster_rcnn/faster-rcnn_r50_fpn_2x_coco.py", None)
    assert cfg.train_cfg.max_epochs == zoo2x.train_cfg.max_epochs == params["epochs"] == 24
    assert cfg.param_scheduler == zoo2x.param_scheduler

    from reprozoo.families.detection.data import DATASETS
    from reprozoo.families.detection.engine import load, point_at

    cfg = load(load_recipe("faster_rcnn_r50_fpn_balloon").config, None)
    point_at(cfg, DATASETS.build({"name": "balloon"}), project / "datasets/balloon", 2)
    assert cfg.model.roi_head.bbox_head.num_classes == 1 and "num_classes" not in cfg.model.rpn_head  # RPN: class-agnostic
    assert cfg.train_dataloader.dataset.metainfo == {"classes": ("balloon",)}
    assert cfg.test_evaluator.ann_file == str(project / "datasets/balloon/val/annotation_coco.json")
    cfg = load(load_recipe("retinanet_r50_fpn_1x_coco").config, None)
    point_at(cfg, DATASETS.build({"name": "balloon"}), project / "datasets/balloon", 2)
    assert cfg.model.bbox_head.num_classes == 1


def test_backbone_weights_offline_fail_at_once_or_come_from_a_local_file(project, data_root, monkeypatch, tmp_path):
    import torch

    from reprozoo.families.detection.engine import backbone_weights, load
    from reprozoo.recipes import load_recipe

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def offline(url, timeout):
        calls.append((url, timeout))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    r = load_recipe("faster_rcnn_r50_fpn_1x_coco")
    with pytest.raises(ConfigError, match=r"faster_rcnn_r50_fpn_1x_coco.yaml.*backbone_weights.*torchvision://resnet50.*"
                                          r"Put resnet50-0676ba61.pth at .*store/checkpoints/resnet50-0676ba61.pth.*'none'"):
        backbone_weights(load(r.config, r.path), "zoo", r.path)
    assert calls == [("https://download.pytorch.org/models/resnet50-0676ba61.pth", 30)]

    (data_root / "checkpoints").mkdir()
    torch.save({}, data_root / "checkpoints/resnet50-0676ba61.pth")
    cfg = load(r.config, r.path)
    got = backbone_weights(cfg, "zoo", r.path)
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint=str(data_root / "checkpoints/resnet50-0676ba61.pth"))
    assert "torchvision://resnet50" in got["backbone_weights"] and len(calls) == 1


@pytest.mark.parametrize("body, key, message", [
    ("overrides: {model.backbone.dept: 18}", "overrides.model.backbone.dept", "the config has no key 'dept' at model.backbone"),
    ("config: mmdet::faster_rcnn/faster-rcnn_r50_fpn_3x_coco.py", "config", "faster-rcnn_r50_fpn_1x_coco.py"),
    ("config: mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py", "dataset.name", "COCO-format, but the config's train_dataloader reads a ConcatDataset"),
    ("backbone_weights: weights/missing.pth", "backbone_weights", "no checkpoint file weights/missing.pth"),
    ("backbone_weights: imagenet", "backbone_weights", "expected 'zoo'"),
    ("dataset: {name: coco2017, val_images: 0}", "dataset", "val_images must be a positive integer"),
    ("tricks: [{name: giou_loss, weight: -1}]", "tricks[0].weight", "must be in (0, inf)"),
    ("tricks: [dice_loss]", "tricks[0]", "not available for family 'detection'"),
])
def test_bad_recipes_name_the_file_and_key(project, body, key, message):
    from reprozoo.recipes import load_recipe

    write(project / "recipes/detection/bad.yaml", f"extends: faster_rcnn_r50_fpn_1x_coco\n{body}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe("bad")
    assert "bad.yaml" in str(e.value) and key in str(e.value) and message in str(e.value)


def test_sanity_checks_pass_on_a_healthy_recipe_and_catch_broken_ones(project, data_root):
    from reprozoo.checks import check, guarded
    from reprozoo.families.detection.checks import input_audit

    make_coco(data_root)
    recipe = tiny(project)
    results, written = check(recipe, 0)
    by_name = {c.name: c for c in results}
    assert set(by_name) == {"input audit", "overfit one batch", "trivial solution", "mode audit", "determinism", "throughput", "look at the data"}
    assert all(c.ok for c in results), [(c.name, c.summary) for c in results if not c.ok]
    report = written[0].read_text()
    assert (project / "reports/checks/tiny_frcnn-samples.png").exists() and "small (< 32^2)" in report and "person" in report
    scan, profile = by_name["throughput"].details
    assert scan.startswith("batch-size scan (samples/s): 1: ") and "throughput stops growing at batch" in scan
    assert profile.startswith("input pipeline profile (own time): ")

    # un-normalised inputs (mean 0, std 1) and a box head with fewer classes than the labels
    broken = tiny(project, "broken_frcnn", extra="  model.data_preprocessor.mean: [0, 0, 0]\n  model.data_preprocessor.std: [1, 1, 1]\n"
                                                 "  model.roi_head.bbox_head.num_classes: 1\n")
    audit = guarded("input audit", input_audit, broken, 0, project / "scratch")
    assert not audit.ok and "not normalised" in audit.summary and "outside the head's classes 0..0" in audit.summary


class _NanGrad(__import__("torch").autograd.Function):
    """Identity forward, NaN gradients backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_non_finite_step_stops_the_run_naming_the_step_and_pass_and_keeps_the_weights(project, data_root, monkeypatch, where):
    import torch
    from mmdet.models.losses import L1Loss

    from reprozoo import paths
    from reprozoo.families.openmmlab import NonFiniteStep
    from reprozoo.runs import execute

    make_coco(data_root)
    recipe = tiny(project)
    from mmengine.logging import MessageHub

    forward = L1Loss.forward

    def broken(self, *a, **k):  # the L1 box losses (RPN and RoI head) go bad at training step 3
        out = forward(self, *a, **k)
        if MessageHub.get_current_instance().get_info("iter") == 2:
            return out * float("nan") if where == "forward" else _NanGrad.apply(out)
        return out

    monkeypatch.setattr(L1Loss, "forward", broken)
    with pytest.raises(NonFiniteStep) as e:
        execute(recipe, 0, progress=False)
    msg = str(e.value)
    assert f"the {where} pass gave" in msg and "non-finite" in msg and "at step 3" in msg
    if where == "forward":
        assert "loss_bbox nan" in msg and "loss_rpn_cls" in msg  # the terms, the bad one among them
    else:
        assert "gradients in" in msg
    saved = next(paths.work_dir().glob("tiny_frcnn/seed0-*/last_good.pth"))
    state = torch.load(saved, map_location="cpu", weights_only=True)
    assert state["meta"]["iter"] == 2 and all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert not (project / "runs/tiny_frcnn/seed0").exists()
