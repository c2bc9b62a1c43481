"""The classification dataset registry and `ArrayDataset`. Datasets are defined in `zoo/<benchmark>.py`:
how each is prepared into `datasets/<name>/` and loaded from there."""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch
import torch.nn.functional as F

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

    def to(self, device) -> "ArrayDataset":
        """Keep the whole set on `device` (a GPU), so each batch is one gather there."""
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    def __getitem__(self, i):
        if isinstance(i, list):
            i = torch.as_tensor(i)
        return {"inputs": self.x[i], "labels": self.y[i]}

    def subset(self, indices) -> "ArrayDataset":
        """The samples at `indices` (in that order), with this set's other settings (augmentation)."""
        out = copy.copy(self)
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        out.x, out.y = self.x[idx], self.y[idx]
        out.ids = getattr(self, "ids", torch.arange(len(self.y)))[idx]  # positions in the split's file, for predictions
        return out


class ImageArrayDataset(ArrayDataset):
    """uint8 images (N, C, H, W); with `augment`, each fetched batch is randomly cropped from a
    zero-padded copy (pad 4) and flipped horizontally with probability 1/2, per image."""

    def __init__(self, x, y, augment: bool = False, pad: int = 4):
        self.x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.uint8)
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        self.metainfo = {"num_classes": int(self.y.max()) + 1 if len(self.y) else 0}
        self.augment, self.pad = augment, pad

    def __getitem__(self, i):
        if isinstance(i, list):
            i = torch.as_tensor(i)
        x, y = self.x[i], self.y[i]
        if self.augment and x.ndim == 4:
            x = crop_flip(x, self.pad)
        return {"inputs": x, "labels": y}


def crop_flip(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Random pad-crop and horizontal flip for a batch, with one gather (no per-image Python loop)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (n,)), torch.randint(0, 2 * pad + 1, (n,))
    flip = torch.rand(n) < 0.5  # drawn on the CPU generator: the same crops and flips on every device
    rows = (dy[:, None] + torch.arange(h)[None])  # (n, h)
    cols = dx[:, None] + torch.arange(w)[None]  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n)[:, None, None]
    rows, cols, idx_n = rows.to(x.device), cols.to(x.device), idx_n.to(x.device)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


VAL_FRACTION, VAL_SEED = 0.2, 0  # `eval.split: val` unless the recipe says otherwise


def holdout(labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified hold-out: (training indices, validation indices), each in the set's own order. Per
    class, the first round(fraction x count) of a seeded permutation of that class's samples."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        val.append(rng.permutation(members)[:int(round(fraction * len(members)))])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), val), val


def load_splits(dataset, data_dir, eval_cfg: dict):
    """(training set, evaluation set, what env.json records of a validation split or None). With
    `eval.split: val` the evaluation set is held out of the training set, which trains on the rest."""
    train = dataset.load(data_dir, "train")
    if eval_cfg["split"] != "val":
        return train, dataset.load(data_dir, eval_cfg["split"]), None
    fraction, seed = eval_cfg.get("val_fraction", VAL_FRACTION), eval_cfg.get("val_seed", VAL_SEED)
    tr, va = holdout(train.y.cpu().numpy(), fraction, seed)
    record = {"size": int(len(va)), "train_size": int(len(tr)), "fraction": fraction, "seed": seed,
              "indices_sha256": hashlib.sha256(va.astype(np.int64).tobytes()).hexdigest()}
    return train.subset(tr), train.subset(va), record
