"""MNIST (LeCun et al. 1998) from its official idx files, and LeNet-5 as the paper describes it.

LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document Recognition", Proc.
IEEE 1998, sec. II.B (architecture), Table I (C3 connections), Appendix A-B (squashing, init).
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ....fetch import fetch
from ....io import atomic_write_bytes
from ..datasets import DATASETS, ImageArrayDataset
from ..models import MODELS

_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # the mirror torchvision uses; yann.lecun.com is gone
# md5 of the uncompressed idx files: checked after decompression, so a recompressed .gz still passes
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
}


def read_idx(raw: bytes) -> np.ndarray:
    """An idx file (big-endian header: magic with dtype and rank, then the sizes) as a NumPy array."""
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError("not an unsigned-byte idx file")
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"idx header says {shape}, file holds {data.size} values")
    return data.reshape(shape)


@DATASETS.register("mnist", modality="image", input_size=28, source="LeCun et al. 1998; the official idx files (60000 train / 10000 test)")
class MNIST:
    """MNIST: 60000 train / 10000 test 28x28 grey digits."""

    num_classes = 10
    splits = ("train", "test")
    files = FILES

    def __init__(self, normalize: str = "lecun1998"):
        # LeCun 1998, sec. II.A: background -0.1, foreground 1.175 (mean about 0, variance about 1)
        stats = {"lecun1998": ([20.0], [200.0]), "torchvision": ([0.1307 * 255], [0.3081 * 255])}
        if normalize not in stats:
            raise ValueError(f"normalize must be one of {sorted(stats)}, got {normalize!r}")
        self.normalize = stats[normalize]

    def prepare(self, out_dir: Path) -> None:
        import hashlib

        arrays = {}
        for key, (name, md5) in self.files.items():
            # the .gz bytes vary with the compressor; the content is what is checked
            gz = fetch("mnist", name, md5=None, url=_URL + name, dest=out_dir)
            raw = gzip.decompress(gz.read_bytes())
            if hashlib.md5(raw).hexdigest() != md5:
                raise ValueError(f"{gz}: uncompressed md5 {hashlib.md5(raw).hexdigest()} is not the official {md5}")
            arrays[key] = read_idx(raw)
            gz.unlink()
        for split in ("train", "test"):
            for kind, arr in (("x", arrays[f"{split}_images"][:, None]), ("y", arrays[f"{split}_labels"].astype(np.int64))):
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(arr))
                atomic_write_bytes(Path(out_dir) / f"{kind}_{split}.npy", buf.getvalue())

    def load(self, data_dir: Path, split: str) -> ImageArrayDataset:
        return ImageArrayDataset(np.load(Path(data_dir) / f"x_{split}.npy"), np.load(Path(data_dir) / f"y_{split}.npy"))


# LeCun 1998, Table I: which S2 maps (rows) each C3 map (columns) sees
C3_TABLE = [(0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5), (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5),
            (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5), (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5)]


def squash(a):
    """f(a) = A tanh(S a), A = 1.7159, S = 2/3 (Appendix A)."""
    return 1.7159 * torch.tanh(a * (2.0 / 3.0))


class Subsample(nn.Module):
    """S2/S4: the sum of each 2x2 block times a trainable coefficient plus a trainable bias, per map."""

    def __init__(self, maps: int):
        super().__init__()
        self.coef = nn.Parameter(torch.ones(maps))
        self.bias = nn.Parameter(torch.zeros(maps))

    def forward(self, x):
        return 4 * F.avg_pool2d(x, 2) * self.coef.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 `mask` (O, C, 1, 1): C3's partial connections."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask: torch.Tensor):
        super().__init__(in_channels, out_channels, kernel_size)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.mask, self.bias)


@MODELS.register("lenet5", source="LeCun et al. 1998, sec. II.B, Table I, Appendix A")
class LeNet5(nn.Module):
    """LeNet-5: C1 6@5x5, S2, C3 16@5x5 (Table I connections), S4, C5 120, F6 84, then 10 outputs; scaled tanh."""

    def __init__(self, num_classes: int = 10, background: float = -0.1):
        super().__init__()
        self.background = background
        self.c1 = nn.Conv2d(1, 6, 5)
        self.s2 = Subsample(6)
        mask = torch.zeros(16, 6, 1, 1)
        for j, inputs in enumerate(C3_TABLE):
            mask[j, list(inputs)] = 1
        self.c3 = MaskedConv2d(6, 16, 5, mask)
        self.s4 = Subsample(16)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, num_classes)
        for m in (self.c1, self.c3, self.c5, self.f6, self.out):
            fan_in = m.weight[0].numel() if m is not self.c3 else None
            if m is self.c3:
                fan_in = 25 * mask.sum((1, 2, 3)).view(-1, 1, 1, 1)  # each C3 map's own inputs
            bound = 2.4 / fan_in  # Appendix B: uniform in +-2.4/F_i
            with torch.no_grad():
                m.weight.copy_((torch.rand_like(m.weight) * 2 - 1) * bound)
                m.bias.copy_((torch.rand_like(m.bias) * 2 - 1) * (bound if m is not self.c3 else bound.view(-1)))

    def forward(self, x):
        if x.shape[-1] == 28:  # the paper centres the 28x28 digit in a 32x32 field of background
            x = F.pad(x, (2, 2, 2, 2), value=self.background)
        h = squash(self.s2(squash(self.c1(x))))
        h = squash(self.s4(squash(self.c3(h))))
        h = squash(self.c5(h)).flatten(1)
        return self.out(squash(self.f6(h)))
