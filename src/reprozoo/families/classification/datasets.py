"""Classification datasets: how each is prepared into `datasets/<name>/` and loaded from there."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ...io import atomic_write_bytes
from ...registry import Registry

DATASETS = Registry("dataset")


class ArrayDataset(torch.utils.data.Dataset):
    """In-memory samples as `{inputs, labels}`; indexing with a list of indices returns the whole
    batch at once (one gather per step instead of per-sample dicts and a collate)."""

    def __init__(self, x, y):
        self.x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.metainfo = {"num_classes": int(self.y.max()) + 1 if len(self.y) else 0}

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        if isinstance(i, list):
            i = torch.as_tensor(i)
        return {"inputs": self.x[i], "labels": self.y[i]}


@DATASETS.register("mnist1d", modality="sequence", source="greydanus/mnist1d mnist1d/data.py: make_dataset(get_dataset_args())")
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


@DATASETS.register("mnist1d_shuffled", modality="sequence", source="greydanus/mnist1d README, 'MNIST-1D (shuffle)' row: shuffle_seq=True")
class MNIST1DShuffled(MNIST1D):
    """MNIST-1D with the time axis permuted by one fixed permutation (the table's 'shuffle' row)."""

    shuffle_seq = True
