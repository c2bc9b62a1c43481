"""MNIST-1D (Greydanus 2020): the dataset, generated offline, and the four models of its table.

Models follow greydanus/mnist1d `notebooks/models.py`.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from torch import nn

from ....io import atomic_write_bytes
from ..datasets import DATASETS, ArrayDataset
from ..models import MODELS

_MNIST1D_SRC = "greydanus/mnist1d notebooks/models.py"


@MODELS.register("mnist1d_linear", source=_MNIST1D_SRC)
class Linear(nn.Module):
    """Logistic regression: one linear layer (LinearBase)."""

    def __init__(self, input_size: int = 40, num_classes: int = 10):
        super().__init__()
        self.linear = nn.Linear(input_size, num_classes)

    def forward(self, x):
        return self.linear(x)


@MODELS.register("mnist1d_mlp", source=_MNIST1D_SRC)
class MLP(nn.Module):
    """MLPBase: two hidden ReLU layers, the second with a residual connection."""

    def __init__(self, input_size: int = 40, num_classes: int = 10, hidden_size: int = 100):
        super().__init__()
        self.linear1 = nn.Linear(input_size, hidden_size)
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.linear3 = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        h = self.linear1(x).relu()
        h = h + self.linear2(h).relu()
        return self.linear3(h)


@MODELS.register("mnist1d_cnn", source=_MNIST1D_SRC)
class CNN(nn.Module):
    """ConvBase: three strided 1-D convolutions (25 channels) and a linear classifier."""

    def __init__(self, num_classes: int = 10, channels: int = 25, input_size: int = 40):
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        length = input_size
        for k in (5, 3, 3):
            length = (length + 2 - k) // 2 + 1
        self.linear = nn.Linear(channels * length, num_classes)  # 125 for length 40, as upstream

    def forward(self, x):
        h = x.view(-1, 1, x.shape[-1])
        h = self.conv3(self.conv2(self.conv1(h).relu()).relu()).relu()
        return self.linear(h.flatten(1))


@MODELS.register("mnist1d_gru", source=_MNIST1D_SRC)
class GRU(nn.Module):
    """GRUBase: a bidirectional GRU (hidden 6) over the 40 time steps, all outputs into a linear layer."""

    def __init__(self, num_classes: int = 10, hidden_size: int = 6, time_steps: int = 40, bidirectional: bool = True):
        super().__init__()
        self.gru = nn.GRU(input_size=1, hidden_size=hidden_size, batch_first=True, bidirectional=bidirectional)
        self.linear = nn.Linear((2 if bidirectional else 1) * hidden_size * time_steps, num_classes)

    def forward(self, x):
        out, _ = self.gru(x.unsqueeze(-1))  # zero initial state, as upstream's 0*randn
        return self.linear(out.reshape(out.shape[0], -1))


@DATASETS.register("mnist1d", modality="sequence", input_size=40, source="greydanus/mnist1d mnist1d/data.py: make_dataset(get_dataset_args())")
class MNIST1D:
    """MNIST-1D, generated offline: 4000 train / 1000 test sequences of length 40 (seed 42)."""

    num_classes = 10
    splits = ("train", "test")
    shuffle_seq = False

    def prepare(self, out_dir: Path) -> None:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.shuffle_seq = self.shuffle_seq
        d = make_dataset(args)
        for key in ("x", "y", "x_test", "y_test", "t"):
            # one .npy per array: unlike .npz (a zip with timestamps), equal data gives equal bytes,
            # so re-preparing does not change the DVC hash and re-train everything
            buf = io.BytesIO()
            np.save(buf, d[key])
            atomic_write_bytes(Path(out_dir) / f"{key}.npy", buf.getvalue())

    def load(self, data_dir: Path, split: str) -> ArrayDataset:
        key = "" if split == "train" else "_test"
        return ArrayDataset(np.load(Path(data_dir) / f"x{key}.npy"), np.load(Path(data_dir) / f"y{key}.npy"))


@DATASETS.register("mnist1d_shuffled", modality="sequence", input_size=40, source="greydanus/mnist1d README, 'MNIST-1D (shuffle)' row: shuffle_seq=True")
class MNIST1DShuffled(MNIST1D):
    """MNIST-1D with the time axis permuted by one fixed permutation (the table's 'shuffle' row)."""

    shuffle_seq = True
