"""Retinal vessel sets (DRIVE, STARE, CHASE_DB1, HRF) converted by MMSegmentation's own converters.

Raw files are looked up in the data roots (`$REPROZOO_DATA`, then `data/`) under `retina/<SET>/`,
as their official distributions ship them; STARE, CHASE_DB1 and HRF are downloaded when missing
(DRIVE needs a registration, so it has no download). The converters
(`mmseg/.mim/tools/dataset_converters/<set>.py`, the scripts the MMSegmentation docs tell users to
run) write the `images/{training,validation}` + `annotations/...` layout the configs expect.
"""
from __future__ import annotations

import runpy
import sys
import tempfile
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path

from ... import paths
from ...fetch import FetchError, fetch
from ...registry import Registry

DATASETS = Registry("dataset")


def _converter(name: str) -> Path:
    import mmseg

    return Path(mmseg.__file__).parent / ".mim" / "tools" / "dataset_converters" / f"{name}.py"


def run_converter(name: str, args: list[str], out_dir: Path) -> None:
    """Run MMSegmentation's converter script `name` as its command line would."""
    script = _converter(name)
    argv = sys.argv
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        sys.argv = [str(script), *map(str, args), "--tmp_dir", tmp, "-o", str(out_dir)]
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            sys.argv = argv


def _zip_tree(src: Path, zip_path: Path, arcroot: str, parts=None) -> Path:
    """Zip a folder as the official archive holds it (ZIP_STORED: the images are compressed already)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(src.rglob("*")):
            rel = f.relative_to(src)
            if f.is_file() and (parts is None or rel.parts[0] in parts):
                z.write(f, f"{arcroot}/{rel}" if arcroot else str(rel))
    return zip_path


def _images(out_dir: Path, split: str) -> int:
    return len(list((out_dir / "images" / split).glob("*.png")))


class RetinaSet(ABC):
    """A retina set: `prepare` converts the raw files; the options select images when training."""

    store = ""  # folder under the data roots
    dataset_type = ""  # MMSegmentation dataset class the configs use
    sizes = (0, 0)  # training, validation images after conversion

    def __init__(self, train_images: int | None = None, val_images: int | None = None):
        for key, n, total in (("train_images", train_images, self.sizes[0]), ("val_images", val_images, self.sizes[1])):
            if n is not None and not (isinstance(n, int) and 1 <= n <= total):
                raise ValueError(f"{key} must be an integer in 1..{total} (the first N images), got {n!r}")
        self.train_images, self.val_images = train_images, val_images

    def prepare(self, out_dir: Path) -> None:
        with tempfile.TemporaryDirectory(dir=out_dir.parent) as raw:
            self.convert(Path(raw), out_dir)
        got = (_images(out_dir, "training"), _images(out_dir, "validation"))
        if got != self.sizes:
            raise FetchError(f"{self.store}: converting gave {got[0]} training and {got[1]} validation images, "
                             f"expected {self.sizes[0]} and {self.sizes[1]}; the raw files are incomplete")

    @abstractmethod
    def convert(self, raw: Path, out_dir: Path) -> None:
        """Find or fetch the raw files (using `raw` as scratch) and run the set's converter into `out_dir`."""

    def _missing(self, what: str) -> FetchError:
        where = " or ".join(str(r / self.store) for r in paths.data_roots())
        return FetchError(f"{self.store}: {what} not found. Put it at {where} (set {paths.DATA_ENV} to use another folder).")


@DATASETS.register("drive", source="Staal et al., IEEE TMI 2004; https://drive.grand-challenge.org (registration required)")
class DRIVE(RetinaSet):
    """DRIVE: 20 training + 20 test fundus images (565x584) with manual vessel masks."""

    store, dataset_type, sizes = "retina/DRIVE", "DRIVEDataset", (20, 20)

    def convert(self, raw: Path, out_dir: Path) -> None:
        root = paths.find_raw(self.store)
        if root is None:
            raise self._missing("training.zip + test.zip (or their extracted training/ and test/ folders)")
        zips = []
        for part in ("training", "test"):
            if (root / f"{part}.zip").exists():
                zips.append(root / f"{part}.zip")
            elif (root / part / "images").is_dir():  # the extracted official layout: zip it back for the converter
                zips.append(_zip_tree(root / part, raw / f"{part}.zip", part, parts=("images", "1st_manual", "2nd_manual")))
            else:
                raise self._missing(f"{part}.zip (or the folder {part}/images)")
        run_converter("drive", zips, out_dir)


@DATASETS.register("chase_db1", source="Fraz et al., IEEE TBME 2012; https://blogs.kingston.ac.uk/retinal/chasedb1/")
class CHASEDB1(RetinaSet):
    """CHASE_DB1: 28 fundus images (999x960) of 14 children, first observer's masks; first 20 train."""

    store, dataset_type, sizes = "retina/CHASEDB1", "ChaseDB1Dataset", (20, 8)
    url = "https://staffnet.kingston.ac.uk/~ku15565/CHASE_DB1/assets/CHASEDB1.zip"

    def convert(self, raw: Path, out_dir: Path) -> None:
        root = paths.find_raw(self.store)
        if root is not None and root.is_dir() and (root / "CHASEDB1.zip").exists():
            archive = root / "CHASEDB1.zip"
        elif root is not None and root.is_dir() and any(root.glob("*.jpg")):
            archive = _zip_tree(root, raw / "CHASEDB1.zip", "")  # the archive holds the 84 files at its root
        else:
            archive = fetch(self.store, "CHASEDB1.zip", md5=None, url=self.url, dest=raw)
        run_converter("chase_db1", [archive], out_dir)


@DATASETS.register("stare", source="Hoover et al., IEEE TMI 2000; https://cecas.clemson.edu/~ahoover/stare/")
class STARE(RetinaSet):
    """STARE: 20 fundus images (700x605), Hoover's (ah) masks for training and evaluation; first 10 train."""

    store, dataset_type, sizes = "retina/STARE", "STAREDataset", (10, 10)
    files = {"stare-images.tar": "https://cecas.clemson.edu/~ahoover/stare/probing/stare-images.tar",
             "labels-ah.tar": "https://cecas.clemson.edu/~ahoover/stare/probing/labels-ah.tar",
             "labels-vk.tar": "https://cecas.clemson.edu/~ahoover/stare/probing/labels-vk.tar"}

    def convert(self, raw: Path, out_dir: Path) -> None:
        tars = [fetch(self.store, name, md5=None, url=url, dest=raw) for name, url in self.files.items()]
        run_converter("stare", tars, out_dir)


@DATASETS.register("hrf", source="Budai et al., Int. J. Biomed. Imaging 2013; https://www5.cs.fau.de/research/data/fundus-images/")
class HRF(RetinaSet):
    """HRF: 45 high-resolution fundus images (3504x2336), 15 each healthy/glaucoma/diabetic; first 5 of each train."""

    store, dataset_type, sizes = "retina/HRF", "HRFDataset", (15, 30)
    base = "https://www5.cs.fau.de/fileadmin/research/datasets/fundus-images/"
    files = ("healthy.zip", "healthy_manualsegm.zip", "glaucoma.zip", "glaucoma_manualsegm.zip",
             "diabetic_retinopathy.zip", "diabetic_retinopathy_manualsegm.zip")

    def convert(self, raw: Path, out_dir: Path) -> None:
        zips = [fetch(self.store, name, md5=None, url=self.base + name, dest=raw) for name in self.files]
        run_converter("hrf", zips, out_dir)
