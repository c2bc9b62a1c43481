"""The classification model registry. Models are defined in `zoo/<benchmark>.py`."""
from __future__ import annotations

from ...registry import Registry

MODELS = Registry("model")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
