"""One module per benchmark: its datasets and models, registered in `..datasets.DATASETS` and
`..models.MODELS`. Every module here is imported with the family, so adding a benchmark is adding
a file; a pipeline's train stages depend only on the modules their recipe uses.
"""
from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")
