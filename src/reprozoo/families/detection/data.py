"""Detection datasets in COCO format: COCO 2017 itself, and the balloon set converted from VIA.

Raw files are looked up in the data roots (`$REPROZOO_DATA`, then `data/`): COCO under `coco/`
(the official zips, or their extracted `annotations/`, `train2017/`, `val2017/` folders), balloon
under `balloon/` (the extracted `train/` and `val/` folders with `via_region_data.json`, or
`balloon_dataset.zip`). Missing archives are downloaded; COCO's are checked against their md5s.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path

from ... import paths
from ...fetch import FetchError, fetch, md5sum
from ...registry import Registry

DATASETS = Registry("dataset")


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy, across file systems) every file of `src` into `dst`: no second copy of the images."""
    for f in sorted(src.rglob("*")):
        if f.is_file():
            out = dst / f.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, out)
            except OSError:
                shutil.copy2(f, out)


def check_images(ann_file: Path, img_dir: Path) -> int:
    """Every image the annotation file lists must be in `img_dir`; returns their number."""
    images = json.loads(ann_file.read_text())["images"]
    missing = [im["file_name"] for im in images if not (img_dir / im["file_name"]).is_file()]
    if missing:
        raise FetchError(f"{ann_file.name} lists {len(missing)} images missing from {img_dir} (first: {missing[0]})")
    return len(images)


class CocoFormatSet(ABC):
    """A COCO-format set. `splits` maps train/val to (annotation file, image folder) inside the
    prepared directory; `classes` is None when the configs' own classes (COCO's 80) apply."""

    store = ""
    classes: tuple[str, ...] | None = None
    splits = {"train": ("", ""), "val": ("", "")}

    def __init__(self, train_images: int | None = None, val_images: int | None = None):
        for key, n in (("train_images", train_images), ("val_images", val_images)):
            if n is not None and not (isinstance(n, int) and n >= 1):
                raise ValueError(f"{key} must be a positive integer (the first N images), got {n!r}")
        self.train_images, self.val_images = train_images, val_images

    @abstractmethod
    def prepare(self, out_dir: Path) -> None:
        """Find or fetch the raw files and write the COCO-format set into `out_dir`."""

    def _missing(self, what: str) -> FetchError:
        where = " or ".join(str(r / self.store) for r in paths.data_roots())
        return FetchError(f"{self.store}: {what} not found. Put it at {where} (set {paths.DATA_ENV} to use another folder).")


@DATASETS.register("coco2017", source="Lin et al., Microsoft COCO, ECCV 2014; https://cocodataset.org (2017 split)")
class Coco2017(CocoFormatSet):
    """COCO 2017 detection: train2017 (118k images) and val2017 (5k), 80 classes, official annotations."""

    store = "coco"
    splits = {"train": ("annotations/instances_train2017.json", "train2017"),
              "val": ("annotations/instances_val2017.json", "val2017")}
    archives = {  # folder it extracts to: (archive, md5), as cocodataset.org publishes them
        "annotations": ("annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c"),
        "train2017": ("train2017.zip", "cced6f7f71b7629ddf16f17bbcfab6b2"),
        "val2017": ("val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80"),
    }
    base_url = "http://images.cocodataset.org/"

    def prepare(self, out_dir: Path) -> None:
        root = paths.find_raw(self.store)
        for folder, (archive, md5) in self.archives.items():
            if root is not None and (root / folder).is_dir():
                link_tree(root / folder, out_dir / folder)
                continue
            url = self.base_url + ("annotations/" if folder == "annotations" else "zips/") + archive
            with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
                local = root / archive if root is not None else None
                if local is not None and local.is_file():  # read in place: train2017.zip is 18 GB
                    if md5sum(local) != md5:
                        raise FetchError(f"{local}: md5 {md5sum(local)} does not match cocodataset.org's {md5}; the file is corrupt or another version")
                else:
                    local = fetch(self.store, archive, md5=md5, url=url, dest=Path(tmp))
                with zipfile.ZipFile(local) as z:
                    z.extractall(out_dir)
        for ann, images in self.splits.values():
            check_images(out_dir / ann, out_dir / images)


@DATASETS.register("balloon", source="Abdulla, Mask R-CNN balloon example (matterport/Mask_RCNN release v2.1, MIT); "
                   "converted as MMDetection's tutorial (docs/en/user_guides/train.md) converts it")
class Balloon(CocoFormatSet):
    """Balloon: 61 training and 13 validation photos with 255 / 50 balloons outlined as VIA polygons."""

    store = "balloon"
    classes = ("balloon",)
    splits = {"train": ("train/annotation_coco.json", "train"), "val": ("val/annotation_coco.json", "val")}
    sizes = {"train": (61, 255), "val": (13, 50)}
    url = "https://github.com/matterport/Mask_RCNN/releases/download/v2.1/balloon_dataset.zip"

    def prepare(self, out_dir: Path) -> None:
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
            root = paths.find_raw(self.store)
            if root is None or not (root / "train" / "via_region_data.json").is_file():
                archive = fetch(self.store, "balloon_dataset.zip", md5=None, url=self.url, dest=Path(tmp))
                with zipfile.ZipFile(archive) as z:
                    z.extractall(tmp)
                root = Path(tmp) / "balloon"
            for split, (ann, folder) in self.splits.items():
                src = root / split
                if not (src / "via_region_data.json").is_file():
                    raise self._missing(f"{split}/via_region_data.json")
                link_tree(src, out_dir / folder)
                coco = via_to_coco(json.loads((src / "via_region_data.json").read_text()), src, self.classes[0])
                got = (len(coco["images"]), len(coco["annotations"]))
                if got != self.sizes[split]:
                    raise FetchError(f"{src}: {got[0]} images with {got[1]} regions, expected {self.sizes[split]}: "
                                     "the copy is incomplete or another version")
                (out_dir / ann).write_text(json.dumps(coco))


def via_to_coco(via: dict, image_dir: Path, category: str) -> dict:
    """VIA 2.x polygon regions -> COCO instances, as MMDetection's balloon tutorial converts them.

    Polygon points are shifted by half a pixel (pixel centres, as the tutorial does); the box spans
    the raw points. `area` is the polygon's (shoelace), COCO's definition, which decides the
    small/medium/large buckets; the tutorial wrote the box's area there. Ids start at 1."""
    from PIL import Image

    images, annotations = [], []
    for image_id, entry in enumerate(via.values(), start=1):
        with Image.open(image_dir / entry["filename"]) as im:  # reads the header only
            width, height = im.size
        images.append(dict(id=image_id, file_name=entry["filename"], height=height, width=width))
        regions = entry["regions"].values() if isinstance(entry["regions"], dict) else entry["regions"]
        for region in regions:
            shape = region["shape_attributes"]
            if shape.get("name", "polygon") != "polygon":
                raise ValueError(f"{entry['filename']}: region shape {shape.get('name')!r}; only polygons are converted")
            xs, ys = shape["all_points_x"], shape["all_points_y"]
            poly = [c for x, y in zip(xs, ys) for c in (x + 0.5, y + 0.5)]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
            area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs))))
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=1, iscrowd=0,
                                    bbox=[x0, y0, x1 - x0, y1 - y0], area=float(area), segmentation=[poly]))
    return dict(images=images, annotations=annotations, categories=[dict(id=1, name=category)])
