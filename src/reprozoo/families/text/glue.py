"""GLUE (Wang et al. 2019): the nine tasks, their metrics, and two ways in that yield the same examples.

- the original TSV distribution, `<data root>/glue/<TASK>/{train,dev}.tsv` (as `download_glue_data.py`
  writes it), read with `csv.QUOTE_NONE` because MRPC and STS-B sentences hold stray quotes;
- the Hugging Face Hub dataset `nyu-mll/glue` through `datasets.load_dataset`, or a local snapshot
  of it (`<data root>/hf/nyu-mll/glue/<config>/<split>-*.parquet`).

Both become `datasets/glue_<task>/<split>.jsonl`: one record per example with the Hub's column names,
`label` as the Hub's class index (or float score) and `idx` the position in the split.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import paths
from ...errors import ReprozooError
from ...io import atomic_write_text
from ...registry import Registry

DATASETS = Registry("dataset")
HUB_ID = "nyu-mll/glue"


class DataError(ReprozooError):
    """GLUE files are missing or do not look like the distribution they claim to be."""


@dataclass(frozen=True)
class Task:
    name: str  # the Hub config: cola, sst2...
    folder: str  # the TSV distribution's folder: CoLA, SST-2...
    text: tuple[str, ...]  # the Hub's text columns
    labels: tuple[str, ...] | None  # class names in the Hub's index order; None for regression (STS-B)
    metrics: tuple[str, ...]  # first one is the task's headline metric
    tsv_columns: tuple[str, ...]  # TSV columns holding text..., label
    dev: tuple[tuple[str, str, str], ...] = (("dev", "dev.tsv", "validation"),)  # (our split, TSV file, Hub split)
    header: bool = True

    @property
    def num_labels(self) -> int:
        return len(self.labels) if self.labels else 1

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *(d[0] for d in self.dev))


TASKS = {t.name: t for t in (
    Task("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",),
         ("3", "1"), header=False),  # columns: source, label, original mark, sentence
    Task("sst2", "SST-2", ("sentence",), ("negative", "positive"), ("accuracy",), ("sentence", "label")),
    Task("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy"),
         ("#1 String", "#2 String", "Quality")),
    Task("stsb", "STS-B", ("sentence1", "sentence2"), None, ("pearson", "spearmanr"), ("sentence1", "sentence2", "score")),
    Task("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1"),
         ("question1", "question2", "is_duplicate")),
    Task("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",),
         ("sentence1", "sentence2", "gold_label"),
         dev=(("dev_matched", "dev_matched.tsv", "validation_matched"),
              ("dev_mismatched", "dev_mismatched.tsv", "validation_mismatched"))),
    Task("qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",),
         ("question", "sentence", "label")),
    Task("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",),
         ("sentence1", "sentence2", "label")),
    Task("wnli", "WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",),
         ("sentence1", "sentence2", "label")),
)}


def _label(task: Task, raw: str, where: str):
    if task.labels is None:
        return round(float(raw), 6)  # the Hub stores float32; six decimals make both paths agree
    if raw in task.labels:
        return task.labels.index(raw)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value < len(task.labels):
        raise DataError(f"{where}: label {raw!r} is not one of {list(task.labels)} or 0..{len(task.labels) - 1}")
    return value


def _read_tsv(path: Path, header: bool) -> list[dict | list]:
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8-sig", newline="") as f:  # MRPC's files start with a byte-order mark
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if header else \
            csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return list(reader)


def _records_from_rows(task: Task, rows, path: Path) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i + 1}"
        try:
            values = [row[int(c)] if not isinstance(row, dict) else row[c] for c in task.tsv_columns]
        except (KeyError, IndexError):
            raise DataError(f"{where}: expected columns {list(task.tsv_columns)}") from None
        if any(v is None for v in values):  # a malformed row (QQP's train set has some): csv gives None
            raise DataError(f"{where}: too few fields")
        rec = dict(zip(task.text, values[:-1]))
        rec["label"] = _label(task, values[-1], where)
        rec["idx"] = i
        out.append(rec)
    return out


def _mrpc_train(folder: Path) -> list[dict] | None:
    """MRPC's train split as `download_glue_data.py` builds it: `msr_paraphrase_train.txt` minus the dev pairs."""
    src, ids = folder / "msr_paraphrase_train.txt", folder / "dev_ids.tsv"
    if not (src.exists() and ids.exists()):
        return None
    dev = {tuple(r[:2]) for r in _read_tsv(ids, header=False) if len(r) >= 2}
    rows = [r for r in _read_tsv(src, header=True) if (r["#1 ID"], r["#2 ID"]) not in dev]
    return _records_from_rows(TASKS["mrpc"], rows, src)


def read_tsv_split(task: Task, folder: Path, split: str) -> list[dict]:
    if task.name == "mrpc" and split == "train" and (recs := _mrpc_train(folder)) is not None:
        return recs
    name = "train.tsv" if split == "train" else dict((d[0], d[1]) for d in task.dev)[split]
    path = folder / name
    if not path.exists():
        raise DataError(f"{path}: missing from the GLUE folder {folder}")
    return _records_from_rows(task, _read_tsv(path, task.header), path)


def records_from_hub(task: Task, ds) -> list[dict]:
    """A `datasets.Dataset` split of `nyu-mll/glue` as records (the Hub's ClassLabel is already our index)."""
    out = []
    for i, row in enumerate(ds):
        rec = {c: row[c] for c in task.text}
        rec["label"] = round(float(row["label"]), 6) if task.labels is None else int(row["label"])
        rec["idx"] = i
        out.append(rec)
    return out


def load_hub_split(task: Task, split: str, snapshot: Path | None = None):
    """One split from the Hub, or from a local snapshot of the Hub repository (parquet files)."""
    import datasets

    hub_split = "train" if split == "train" else dict((d[0], d[2]) for d in task.dev)[split]
    if snapshot is not None:
        files = sorted((snapshot / task.name).glob(f"{hub_split}-*.parquet"))
        if not files:
            raise DataError(f"{snapshot / task.name}: no {hub_split}-*.parquet files (the layout of the Hub's {HUB_ID})")
        return datasets.load_dataset("parquet", data_files={hub_split: [str(f) for f in files]}, split=hub_split)
    return datasets.load_dataset(HUB_ID, task.name, split=hub_split)


def load_split(task: Task, split: str) -> tuple[list[dict], str]:
    """Records of one split and where they came from: the TSVs, a Hub snapshot, else the Hub itself."""
    folder = paths.find_raw(f"glue/{task.folder}")
    if folder is not None:
        return read_tsv_split(task, folder, split), f"GLUE TSV distribution at {folder}"
    snapshot = paths.find_raw(f"hf/{HUB_ID}")
    if snapshot is not None:
        return records_from_hub(task, load_hub_split(task, split, snapshot)), f"local snapshot of {HUB_ID} at {snapshot}"
    try:
        return records_from_hub(task, load_hub_split(task, split)), f"Hugging Face Hub {HUB_ID} ({task.name})"
    except Exception as e:  # datasets raises ConnectionError, OSError, or its own errors when offline
        where = " or ".join(str(r / "glue" / task.folder) for r in paths.data_roots())
        raise DataError(f"GLUE {task.name}: no local copy and the Hub is unreachable ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}). Put the GLUE TSVs (train.tsv, dev.tsv) at {where}, "
                        f"or a snapshot of {HUB_ID} at <data root>/hf/{HUB_ID} (set {paths.DATA_ENV}).") from None


def read_prepared(data_dir: Path, split: str) -> list[dict]:
    path = Path(data_dir) / f"{split}.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f]


class Glue:
    """A GLUE task prepared into `datasets/glue_<task>/`; `max_seq_length` truncates pairs longest-first."""

    def __init__(self, task: str, max_seq_length: int = 128):
        if max_seq_length < 8:
            raise ValueError(f"max_seq_length must be >= 8, got {max_seq_length}")
        self.task = TASKS[task]
        self.max_seq_length = max_seq_length

    def prepare(self, out_dir: Path) -> None:
        meta = {"task": self.task.name, "splits": {}}
        for split in self.task.splits:
            recs, source = load_split(self.task, split)
            atomic_write_text(Path(out_dir) / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
            meta["splits"][split] = len(recs)
            meta["source"] = source
        atomic_write_text(Path(out_dir) / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _register(task: Task) -> None:
    def factory(max_seq_length: int = 128):
        return Glue(task.name, max_seq_length)

    factory.__doc__ = f"GLUE {task.folder}: {', '.join(task.metrics)} on {', '.join(task.splits[1:])}"
    factory.__module__ = __name__
    DATASETS.register(f"glue_{task.name}", task=task.name, source="Wang et al., GLUE, ICLR 2019")(factory)


for _t in TASKS.values():
    _register(_t)


def compute_metrics(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics in percent, as GLUE reports them (scikit-learn / SciPy; `evaluate.load` needs a network)."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    out = {}
    if task.labels is None:
        p, y = np.asarray(predictions, dtype=np.float64).reshape(-1), np.asarray(labels, dtype=np.float64)
        out["pearson"] = 100 * float(pearsonr(p, y)[0])
        out["spearmanr"] = 100 * float(spearmanr(p, y)[0])
        return out
    p, y = np.asarray(predictions), np.asarray(labels)
    if "matthews_correlation" in task.metrics:
        out["matthews_correlation"] = 100 * float(matthews_corrcoef(y, p))
    out["accuracy"] = 100 * float(accuracy_score(y, p))
    if "f1" in task.metrics:
        out["f1"] = 100 * float(f1_score(y, p))  # positive class 1: equivalent / duplicate
    return out
