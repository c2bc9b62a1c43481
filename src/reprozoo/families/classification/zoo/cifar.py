"""CIFAR-10/100 (Krizhevsky 2009) and the CIFAR ResNets of He et al. 2016.

Images are stored as uint8 NCHW arrays and stay uint8 through the training-time augmentation
(pad-4 random crop and horizontal flip, done for the whole batch at once as fast CIFAR trainers do);
the classifier normalises them (`normalize`), so image policies (AutoAugment) see real pixels.
"""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from torch import nn

from ....fetch import fetch
from ....io import atomic_write_bytes
from ..datasets import DATASETS, ImageArrayDataset
from ..models import MODELS

# channel statistics, on the 0-255 scale
NORMALIZE = {
    "imagenet": ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),  # akamaster/pytorch_resnet_cifar10
    "cifar10": ([125.307, 122.961, 113.8575], [51.5865, 50.847, 51.255]),  # MMPretrain cifar10_bs16.py
    "cifar100": ([129.304, 124.07, 112.434], [68.17, 65.392, 70.418]),  # MMPretrain cifar100_bs16.py
    "devries2017": ([125.3, 123.0, 113.9], [63.0, 62.1, 66.7]),  # uoguelph-mlrg/Cutout train.py
}


# batches.meta's label_names, in label order
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _CIFAR:
    modality = "image"
    splits = ("train", "test")
    archive: tuple[str, str, str | None]  # filename, md5, official URL

    def __init__(self, normalize: str = "cifar10", augment: bool = True):
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {sorted(NORMALIZE)}, got {normalize!r}")
        self.normalize = NORMALIZE[normalize]
        self.augment = augment

    def load(self, data_dir: Path, split: str) -> ImageArrayDataset:
        x = np.load(Path(data_dir) / f"x_{split}.npy")
        y = np.load(Path(data_dir) / f"y_{split}.npy")
        return ImageArrayDataset(x, y, augment=self.augment and split == "train")


def _save(out_dir: Path, name: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)  # .npy: equal data, equal bytes (no zip timestamps), so DVC sees the same dataset
    atomic_write_bytes(Path(out_dir) / name, buf.getvalue())


def _read_batches(tar_path: Path, members: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    with tarfile.open(tar_path, "r:gz") as tar:
        names = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for m in members:
            if m not in names:
                raise ValueError(f"{tar_path}: no member {m!r}; is this the CIFAR python archive?")
            d = pickle.load(tar.extractfile(names[m]), encoding="bytes")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key.encode()], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


@DATASETS.register("cifar10", modality="image", input_size=32, source="Krizhevsky 2009; cifar-10-python.tar.gz, official train/test split")
class CIFAR10(_CIFAR):
    """CIFAR-10: 50000 train / 10000 test 32x32 colour images, 10 classes."""

    num_classes = 10
    classes = CIFAR10_CLASSES
    archive = ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    members = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    label_key = "labels"

    def prepare(self, out_dir: Path) -> None:
        name, md5, url = self.archive
        tar = fetch(self.dataset_dir, name, md5=md5, url=url, dest=out_dir)
        for split, members in self.members.items():
            x, y = _read_batches(tar, members, self.label_key)
            _save(out_dir, f"x_{split}.npy", x)
            _save(out_dir, f"y_{split}.npy", y)
        tar.unlink()

    dataset_dir = "cifar10"


@DATASETS.register("cifar100", modality="image", input_size=32, source="Krizhevsky 2009; cifar-100-python.tar.gz, fine labels")
class CIFAR100(CIFAR10):
    """CIFAR-100: 50000 train / 10000 test 32x32 colour images, 100 fine classes."""

    num_classes = 100
    classes = None  # shown as label ids
    archive = ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")
    members = {"train": ["train"], "test": ["test"]}
    label_key = "fine_labels"
    dataset_dir = "cifar100"

    def __init__(self, normalize: str = "cifar100", augment: bool = True):
        super().__init__(normalize, augment)


@DATASETS.register("cifar10_subset", modality="image", input_size=32,
                   source="shared data store: cifar10/exact_subset.npz, real CIFAR-10 pixels in the official order")
class CIFAR10Subset(_CIFAR):
    """5170 real CIFAR-10 train images and the first 1017 official test images (a local subset, no download)."""

    num_classes = 10
    classes = CIFAR10_CLASSES
    archive = ("exact_subset.npz", "165f864fa46ade95e999ea1de22a6766", None)

    def prepare(self, out_dir: Path) -> None:
        name, md5, url = self.archive
        path = fetch("cifar10", name, md5=md5, url=url, dest=out_dir)
        with np.load(path) as z:
            for split in ("train", "test"):
                _save(out_dir, f"x_{split}.npy", np.ascontiguousarray(z[f"x_{split}"].transpose(0, 3, 1, 2)))
                _save(out_dir, f"y_{split}.npy", z[f"y_{split}"].astype(np.int64))
        path.unlink()


# ---- models ----

class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN; option A: identity shortcut, zero-padded channels, stride-2 subsampling."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, option: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        self.pad = 0
        if stride != 1 or in_planes != planes:
            if option == "A":
                self.pad = (planes - in_planes) // 2
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad:
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        else:
            short = self.shortcut(x)
        return F.relu(out + short)


@MODELS.register("resnet_cifar_he2016", source="He et al. 2016, sec. 4.2; state-dict layout of akamaster/pytorch_resnet_cifar10")
class CifarResNet(nn.Module):
    """ResNet-{20,32,44,56,110} for CIFAR: 3 stages of 16/32/64 channels, (depth-2)/6 blocks each, option-A shortcuts."""

    @staticmethod
    def check_args(depth: int = 20, num_classes: int = 10) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        self.check_args(depth, num_classes)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes, layers = 16, []
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [BasicBlock(planes if i == 0 else width, width, stride if i == 0 else 1) for i in range(n)]
            planes = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)  # as He et al. 2015 and akamaster's _weights_init

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def zero_init_residual(self):
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)


@MODELS.register("resnet18_devries2017", source="MMPretrain resnet18_8xb16_cifar10.py; DeVries & Taylor 2017 (Cutout) code")
class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem without max-pool, 4 stages of 64-512 channels, projection shortcuts."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes, stages = 64, []
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(planes, width, stride, option="B"), BasicBlock(width, width, 1, option="B")))
            planes = width
        self.layers = nn.Sequential(*stages)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def zero_init_residual(self):
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)



class _Basic(nn.Module):
    """MMPretrain's BasicBlock: two 3x3 convolutions, projection shortcut (`downsample`) when the shape changes."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = _projection(in_ch, out, stride)

    def residual(self, x):
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x):
        return F.relu(self.residual(x) + (self.downsample(x) if self.downsample is not None else x))

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2


class _Bottleneck(_Basic):
    """MMPretrain's Bottleneck, style 'pytorch' (the stride sits on the 3x3 convolution), expansion 4."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int):
        nn.Module.__init__(self)
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = _projection(in_ch, out, stride)

    def residual(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        return self.bn3(self.conv3(F.relu(self.bn2(self.conv2(x)))))

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3


def _projection(in_ch: int, out: int, stride: int):
    if stride == 1 and in_ch == out:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out, 1, stride, bias=False), nn.BatchNorm2d(out))


@MODELS.register("resnet_cifar_mmpretrain", source="MMPretrain ResNet_CIFAR (mmpretrain/models/backbones/resnet_cifar.py) + "
                 "GlobalAveragePooling + LinearClsHead; state-dict layout of MMPretrain checkpoints")
class ResNetCIFAR(nn.Module):
    """MMPretrain's CIFAR ResNet-{18,34,50,101,152}: 3x3 stride-1 stem without max-pool, 4 stages of
    64-512 base channels (strides 1, 2, 2, 2), global average pooling, a linear head.

    `init: mmpretrain` initialises as MMPretrain does (Kaiming-normal fan_out convolutions, BN weight 1,
    the last BN of every residual branch zero: `zero_init_residual=True`, head weights N(0, 0.01));
    `init: pytorch` keeps PyTorch's default layer initialisation. Parameter names match MMPretrain's
    checkpoints (`backbone.*`, `head.fc.*`), so a published checkpoint loads as it is.
    """

    DEPTHS = {18: (_Basic, (2, 2, 2, 2)), 34: (_Basic, (3, 4, 6, 3)), 50: (_Bottleneck, (3, 4, 6, 3)),
              101: (_Bottleneck, (3, 4, 23, 3)), 152: (_Bottleneck, (3, 8, 36, 3))}

    @classmethod
    def check_args(cls, depth: int = 50, num_classes: int = 10, init: str = "mmpretrain") -> None:
        if depth not in cls.DEPTHS:
            raise ValueError(f"depth must be one of {sorted(cls.DEPTHS)}, got {depth}")
        if init not in ("mmpretrain", "pytorch"):
            raise ValueError(f"init must be one of ['mmpretrain', 'pytorch'], got {init!r}")

    def __init__(self, depth: int = 50, num_classes: int = 10, init: str = "mmpretrain"):
        super().__init__()
        self.check_args(depth, num_classes, init)
        block, counts = self.DEPTHS[depth]
        self.backbone = nn.Module()
        self.backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.backbone.bn1 = nn.BatchNorm2d(64)
        in_ch = 64
        for i, (n, stride) in enumerate(zip(counts, (1, 2, 2, 2))):
            width = 64 * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, width, stride if j == 0 else 1))
                in_ch = width * block.expansion
            setattr(self.backbone, f"layer{i + 1}", nn.Sequential(*blocks))
        self.head = nn.Module()
        self.head.fc = nn.Linear(in_ch, num_classes)
        if init == "mmpretrain":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
            nn.init.normal_(self.head.fc.weight, std=0.01)
            nn.init.zeros_(self.head.fc.bias)
            self.zero_init_residual()

    def forward(self, x):
        b = self.backbone
        x = F.relu(b.bn1(b.conv1(x)))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        return self.head.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def zero_init_residual(self):
        for m in self.modules():
            if isinstance(m, _Basic):
                nn.init.zeros_(m.last_norm().weight)
