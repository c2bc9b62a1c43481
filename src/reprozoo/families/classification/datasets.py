"""The classification dataset registry and `ArrayDataset`. Datasets are defined in `zoo/<benchmark>.py`:
how each is prepared into `datasets/<name>/` and loaded from there."""
from __future__ import annotations

import numpy as np
import torch

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
