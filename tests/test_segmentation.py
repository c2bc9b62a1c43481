"""The segmentation family: MMSegmentation's converters on synthetic retina sets in their official formats,
a reduced UNet trained and evaluated through the zoo's own config, exact resume, the tricks, the metric
by hand, and errors that name the file and key."""
import gzip
import io
import json
import tarfile
import zipfile

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import write
from reprozoo.errors import ConfigError, ReprozooError

H, W = 72, 70  # small fundus images; the recipes below resize to this instead of 584x565


def _fundus(seed: int, h: int = H, w: int = W):
    """A reddish disc crossed by a few dark one- or two-pixel lines, and their 0/255 mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(4):
        p, q = rng.integers(0, [w, h], size=2), rng.integers(0, [w, h], size=2)
        cv2.line(mask, tuple(map(int, p)), tuple(map(int, q)), 255, int(rng.integers(1, 3)))
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = (40, 90, 180)  # BGR: a red background
    img[mask > 0] = (20, 40, 90)
    img = np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)
    return img, mask


def _gif(path, mask):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path, format="GIF")


def make_drive(root):
    """DRIVE's official layout: training/ (21-40) and test/ (01-20) with TIFF images and GIF masks."""
    d = root / "retina/DRIVE"
    for part, ids in (("training", range(21, 41)), ("test", range(1, 21))):
        for i in ids:
            img, mask = _fundus(i)
            (d / part / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., ::-1]).save(d / part / "images" / f"{i:02d}_{part}.tif")
            _gif(d / part / "1st_manual" / f"{i:02d}_manual1.gif", mask)
            _gif(d / part / "mask" / f"{i:02d}_{part}_mask.gif", np.full_like(mask, 255))
            if part == "test":
                _gif(d / part / "2nd_manual" / f"{i:02d}_manual2.gif", mask)
    return d


def make_chase(root):
    """CHASE_DB1: 28 JPEGs and two observers' PNG masks, flat."""
    d = root / "retina/CHASEDB1"
    d.mkdir(parents=True)
    for n in range(1, 15):
        for eye in "LR":
            img, mask = _fundus(n * 2 + (eye == "R"))
            cv2.imwrite(str(d / f"Image_{n:02d}{eye}.jpg"), img)
            cv2.imwrite(str(d / f"Image_{n:02d}{eye}_1stHO.png"), mask)
            cv2.imwrite(str(d / f"Image_{n:02d}{eye}_2ndHO.png"), mask)
    return d


def _tar_of_gz(path, members):
    with tarfile.open(path, "w") as t:
        for name, data in members:
            blob = gzip.compress(data)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))


def make_stare(root):
    """STARE: three tars of gzipped PPMs (images, Hoover's and Kouznetsova's labels)."""
    d = root / "retina/STARE"
    d.mkdir(parents=True)
    pairs = [_fundus(100 + i) for i in range(1, 21)]
    ppm = lambda a: cv2.imencode(".ppm", a)[1].tobytes()  # noqa: E731
    _tar_of_gz(d / "stare-images.tar", [(f"im{i:04d}.ppm.gz", ppm(img)) for i, (img, _) in enumerate(pairs, 1)])
    for who in ("ah", "vk"):
        _tar_of_gz(d / f"labels-{who}.tar", [(f"im{i:04d}.{who}.ppm.gz", ppm(cv2.merge([m, m, m]))) for i, (_, m) in enumerate(pairs, 1)])
    return d


def make_hrf(root):
    """HRF: six zips, images (JPEG) and manual segmentations (TIFF) of the healthy, glaucoma and diabetic groups."""
    d = root / "retina/HRF"
    d.mkdir(parents=True)
    for group, tag in (("healthy", "h"), ("glaucoma", "g"), ("diabetic_retinopathy", "dr")):
        with zipfile.ZipFile(d / f"{group}.zip", "w") as zi, zipfile.ZipFile(d / f"{group}_manualsegm.zip", "w") as zm:
            for i in range(1, 16):
                img, mask = _fundus(hash((tag, i)) % 1000)
                zi.writestr(f"{i:02d}_{tag}.jpg", cv2.imencode(".jpg", img)[1].tobytes())
                zm.writestr(f"{i:02d}_{tag}.tif", cv2.imencode(".tif", mask)[1].tobytes())
    return d


def _labels(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_drive_official_layout_is_converted_by_mmsegs_converter(project, data_root):
    from reprozoo.datasets_store import prepare

    make_drive(data_root)
    out = prepare("segmentation", "drive")
    assert len(list((out / "images/training").glob("*.png"))) == 20
    assert len(list((out / "images/validation").glob("*.png"))) == 20
    ann = _labels(out / "annotations/training/21_manual1.png")
    assert ann.shape == (H, W) and set(np.unique(ann)) == {0, 1}
    np.testing.assert_array_equal(ann, _fundus(21)[1] // 255)  # the GIF mask, thresholded at 128
    img = cv2.imread(str(out / "images/validation/01.png"))
    np.testing.assert_array_equal(img, _fundus(1)[0])  # TIFF pixels kept exactly


def test_drive_zips_are_used_as_distributed(project, data_root, tmp_path):
    from reprozoo.datasets_store import prepare
    from reprozoo.families.segmentation.retina import _zip_tree

    src = make_drive(tmp_path / "unzipped")
    d = data_root / "retina/DRIVE"
    d.mkdir(parents=True)
    for part in ("training", "test"):
        _zip_tree(src / part, d / f"{part}.zip", part)
    out = prepare("segmentation", "drive")
    np.testing.assert_array_equal(_labels(out / "annotations/validation/05_manual1.png"), _fundus(5)[1] // 255)


def test_chase_stare_hrf_converters(project, data_root):
    from reprozoo.datasets_store import prepare

    make_chase(data_root), make_stare(data_root), make_hrf(data_root)
    for name, sizes, probe in (("chase_db1", (20, 8), "annotations/training/Image_01L_1stHO.png"),
                               ("stare", (10, 10), "annotations/training/im0001.ah.png"),
                               ("hrf", (15, 30), "annotations/training/01_h.png")):
        out = prepare("segmentation", name)
        got = tuple(len(list((out / "images" / s).glob("*.png"))) for s in ("training", "validation"))
        assert got == sizes, name
        assert set(np.unique(_labels(out / probe))) == {0, 1}, name
    np.testing.assert_array_equal(_labels(out.parent / "chase_db1/annotations/training/Image_01L_1stHO.png"), _fundus(2)[1] // 255)


def test_missing_drive_names_the_folder_to_fill(project, data_root):
    from reprozoo.datasets_store import prepare

    with pytest.raises(ReprozooError, match=r"retina/DRIVE: training.zip \+ test.zip .* not found\. Put it at .*store/retina/DRIVE.*REPROZOO_DATA"):
        prepare("segmentation", "drive")
    assert not (project / "datasets/drive").exists()


# A reduced UNet (8 base channels) on the synthetic DRIVE: the zoo config with its sizes overridden.
TINY = """\
extends: unet_fcn_drive_64x64
description: "test: reduced UNet on synthetic DRIVE"
dataset: {{name: drive, train_images: 4, val_images: 2}}
overrides:
  model.backbone.base_channels: 8
  model.decode_head.in_channels: 8
  model.decode_head.channels: 8
  model.auxiliary_head.in_channels: 16
  model.auxiliary_head.channels: 8
  train_dataloader.dataset.dataset.pipeline.2.scale: [{w}, {h}]
  val_dataloader.dataset.pipeline.1.scale: [{w}, {h}]
  test_dataloader.dataset.pipeline.1.scale: [{w}, {h}]
schedule: {{iters: {iters}, batch_size: 4, num_workers: 1}}
eval: {{interval: 3}}
checkpoint_interval: 3
{extra}
"""


def tiny(project, name="tiny_unet", iters=6, extra=""):
    from reprozoo.recipes import load_recipe

    write(project / f"recipes/segmentation/{name}.yaml", TINY.format(w=W, h=H, iters=iters, extra=extra))
    return load_recipe(name)


def test_reduced_unet_trains_and_evaluates_with_dice(project, data_root):
    from reprozoo.runs import execute, run_dir

    from reprozoo.families.segmentation.engine import runner_config
    from reprozoo.runs import RunContext

    make_drive(data_root)
    recipe = tiny(project)
    cfg, _ = runner_config(recipe, 0, RunContext(recipe, 0, project / "w", project / "w/dvclive", threads=1))
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg[key]
        data = loader.dataset.get("dataset", loader.dataset)
        assert (loader.num_workers, data.data_root) == (1, str(project / "datasets/drive")), key
        assert data.indices == (4 if key == "train_dataloader" else 2), key
    assert cfg.train_dataloader.batch_size == 4 and cfg.param_scheduler[0].end == 6 and cfg.train_cfg.max_iters == 6
    metrics = execute(recipe, 0, progress=False)["test"]
    assert set(metrics) == {"Dice", "mDice", "IoU", "mIoU", "aAcc"}
    assert all(0 <= v <= 100 for v in metrics.values())
    assert metrics["mDice"] > metrics["Dice"] or metrics["Dice"] == 0  # background is the easy class
    d = run_dir("tiny_unet", 0)
    params = yaml.safe_load((d / "dvclive/params.yaml").read_text())
    # 4 images a step instead of the zoo's 4 x 4: lr 0.01 x 4/16, recorded with what was published
    assert params["batch_size"] == 4 and params["published_batch_size"] == 16
    assert params["lr"] == pytest.approx(0.0025) and params["published_lr"] == 0.01 and params["iters"] == 6
    steps = [int(r.split("\t")[0]) for r in (d / "dvclive/plots/metrics/Dice.tsv").read_text().splitlines()[1:]]
    assert steps == [3, 6]


def test_same_seed_is_bitwise_and_resume_after_a_crash_matches(project, data_root, monkeypatch):
    from reprozoo.frameworks.mmrunner import ProgressBarHook
    from reprozoo.io import read_json
    from reprozoo.runs import execute, run_dir

    make_drive(data_root)
    recipe = tiny(project)
    first = execute(recipe, 0, progress=False)
    again = execute(recipe, 0, force=True, progress=False)
    assert first == again

    original = ProgressBarHook.after_train_iter

    def crash(self, runner, *a, **k):
        original(self, runner, *a, **k)
        if runner.iter == 4:  # the checkpoint of iteration 3 is on disk
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBarHook, "after_train_iter", crash)
    with pytest.raises(KeyboardInterrupt):
        execute(recipe, 0, force=True, progress=False)
    monkeypatch.setattr(ProgressBarHook, "after_train_iter", original)
    resumed = execute(recipe, 0, force=True, progress=False)
    assert read_json(run_dir("tiny_unet", 0) / "env.json")["resumed_from_iter"] == 3
    assert resumed == first
    steps = [int(r.split("\t")[0]) for r in (run_dir("tiny_unet", 0) / "dvclive/plots/metrics/Dice.tsv").read_text().splitlines()[1:]]
    assert steps == [3, 6]


def test_tricks_patch_the_config_as_the_zoo_writes_them(project):
    from reprozoo.families.segmentation import tricks
    from reprozoo.families.segmentation.engine import load_config
    from reprozoo.recipes import load_recipe

    write(project / "recipes/segmentation/drive_tricks.yaml",
          "extends: unet_fcn_drive_64x64\ntricks: [dice_loss, ema, {name: longer_schedule, factor: 1.5}, hflip_tta]\n")
    r = load_recipe("drive_tricks")
    cfg = load_config(r.config["config"], r.path)
    hooks = tricks.patch_config(cfg, r.config["tricks"])
    zoo = load_config("mmseg::unet/unet-s5-d16_fcn_4xb4-ce-1.0-dice-3.0-40k_drive-64x64.py", None)
    assert cfg.model.decode_head.loss_decode == zoo.model.decode_head.loss_decode  # CE 1.0 + Dice 3.0
    assert hooks == [dict(type="EMAHook", momentum=0.0002, update_buffers=True, priority="ABOVE_NORMAL")]
    assert tricks.patch_recipe(r.config)["schedule"]["iters"] == 60000
    tta = tricks.flip_tta_pipeline(cfg.test_dataloader.dataset.pipeline)
    assert [t["type"] for t in tta] == ["LoadImageFromFile", "TestTimeAug"]
    assert [[s["type"] for s in group] for group in tta[1]["transforms"]] == [
        ["Resize"], ["RandomFlip", "RandomFlip"], ["LoadAnnotations"], ["PackSegInputs"]]
    assert [s["prob"] for s in tta[1]["transforms"][1]] == [0.0, 1.0]


def test_flip_tta_dice_loss_and_ema_train_end_to_end(project, data_root):
    from reprozoo.runs import execute

    make_drive(data_root)
    plain = execute(tiny(project), 0, progress=False)["test"]
    tta = execute(tiny(project, "tiny_unet_tta", extra="tricks: [hflip_tta]"), 0, progress=False)["test"]
    assert tta != plain  # same weights (same seed, same training), evaluated over both flips
    both = execute(tiny(project, "tiny_unet_tricks", extra="tricks: [dice_loss, ema]"), 0, progress=False)["test"]
    assert both != plain and all(0 <= v <= 100 for v in both.values())


def test_metric_matches_a_hand_count():
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from reprozoo.families.segmentation.metrics import RetinaMetric

    gt = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0]])
    pred = torch.tensor([[0, 1, 0, 0], [1, 1, 0, 0]])
    s = SegDataSample()
    s.gt_sem_seg, s.pred_sem_seg = PixelData(data=gt[None]), PixelData(data=pred[None])
    m = RetinaMetric()
    m.dataset_meta = {"classes": ("background", "vessel")}
    m.process({}, [s.to_dict()])
    got = m.compute_metrics(m.results)
    # vessel: TP 2, FP 1, FN 1 -> Dice 4/6, IoU 2/4; background: TP 4, FP 1, FN 1 -> Dice 8/10, IoU 4/6
    assert got["Dice"] == pytest.approx(100 * 4 / 6) and got["IoU"] == pytest.approx(50.0)
    assert got["mDice"] == pytest.approx(100 * (4 / 6 + 0.8) / 2) and got["mIoU"] == pytest.approx(100 * (0.5 + 4 / 6) / 2)
    assert got["aAcc"] == pytest.approx(75.0)
    (name, confusion), = m.last  # the image's pixel confusion matrix, rows label, columns prediction: predictions.csv
    assert name == "" and confusion.tolist() == [[4, 1], [1, 2]]


@pytest.mark.parametrize("text, key, problem", [
    ("overrides: {model.backbone.base_channel: 8}", "overrides.model.backbone.base_channel", "no key 'base_channel'"),
    ("overrides: {train_dataloader.dataset.dataset.pipeline.9.scale: [1, 1]}", "overrides.train_dataloader.dataset.dataset.pipeline.9.scale", "no key '9'"),
    ("config: mmseg::unet/unet-s5-d16_fcn_4xb4-40k_drive-65x65.py", "config", "cannot load"),
    ("config: unet.yaml", "config", "expected 'mmseg::"),
    ("dataset: stare", "dataset.name", "is a STAREDataset, but the config's train_dataloader reads a DRIVEDataset"),
    ("dataset: {name: drive, train_images: 0}", "dataset", "train_images must be an integer in 1..20"),
    ("schedule: {lr_scaling: sqrt}", "schedule.lr_scaling", "unknown value 'sqrt'"),
    ("tricks: [mixup]", "tricks[0]", "not available for family 'segmentation'"),
    ("tricks: [{name: longer_schedule, factor: 0.5}]", "tricks[0].factor", "must be in (1, 100]"),
])
def test_bad_recipes_name_file_and_key(project, text, key, problem):
    from reprozoo.recipes import load_recipe

    path = write(project / "recipes/segmentation/bad.yaml", f"extends: unet_fcn_drive_64x64\n{text}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe("bad")
    assert e.value.file == str(path) and e.value.key == key and problem in e.value.problem


def test_bad_config_lists_the_zoo_and_bad_override_lists_keys(project):
    from reprozoo.recipes import load_recipe

    write(project / "recipes/segmentation/bad.yaml", "extends: unet_fcn_drive_64x64\nconfig: mmseg::unet/nope.py\n")
    with pytest.raises(ConfigError) as e:
        load_recipe("bad")
    assert "mmseg::unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py" in e.value.allowed
    write(project / "recipes/segmentation/bad.yaml", "extends: unet_fcn_drive_64x64\noverrides: {model.backbone.base_channel: 8}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe("bad")
    assert "base_channels" in e.value.allowed


def test_dice_loss_on_the_ce_dice_config_changes_nothing(project):
    from reprozoo.recipes import load_recipe

    write(project / "recipes/segmentation/bad.yaml", "extends: unet_fcn_ce_dice_drive_64x64\ntricks: [dice_loss]\n")
    with pytest.raises(ConfigError, match="already has a DiceLoss"):
        load_recipe("bad")


def test_zoo_recipes_keep_the_published_setup():
    from reprozoo.families.segmentation.engine import load_config
    from reprozoo.recipes import load_recipe

    from reprozoo.claims import load_baseline

    names = sorted({c.recipe for c in load_baseline("unet_retina_mmseg").claims})
    assert len(names) == 5
    for n in names:
        r = load_recipe(n)
        s = r.config["schedule"]
        cfg = load_config(r.config["config"], r.path)
        assert (s["iters"], s["batch_size"], s["reference_batch_size"]) == (40000, 16, 16), n
        assert cfg.train_cfg.max_iters == 40000 and cfg.optim_wrapper.optimizer.lr == 0.01, n
        assert 4 * cfg.train_dataloader.batch_size == s["reference_batch_size"], n  # 4 GPUs x 4 images
        assert r.config["overrides"] == {} and r.config["tricks"] == [], n


def test_sanity_checks_pass_on_a_healthy_recipe_and_catch_unconverted_masks(project, data_root):
    from reprozoo.checks import check
    from reprozoo.datasets_store import prepare

    make_drive(data_root)
    recipe = tiny(project)
    results, written = check(recipe, 0)
    by_name = {c.name: c for c in results}
    assert all(c.ok for c in results), [(c.name, c.summary) for c in results if not c.ok]
    assert set(by_name) == {"input audit", "overfit one batch", "trivial solution", "mode audit", "determinism", "throughput", "look at the data"}
    assert (project / "reports/checks/tiny_unet-samples.png").exists() and "foreground" in written[0].read_text()
    scan, profile = by_name["throughput"].details
    assert scan.startswith("batch-size scan (samples/s): 1: ") and "throughput stops growing at batch" in scan
    assert profile.startswith("input pipeline profile (own time): ")

    # masks left as 0/255 (the converter's // 128 skipped): 255 is the ignore index, so no vessel is ever learned
    out = prepare("segmentation", "drive", force=True)
    for f in (out / "annotations/training").glob("*.png"):
        cv2.imwrite(str(f), _labels(f) * 255)
    results, _ = check(recipe, 0)
    by_name = {c.name: c for c in results}
    assert not by_name["input audit"].ok and "no foreground pixel" in by_name["input audit"].summary
    assert not by_name["look at the data"].ok
