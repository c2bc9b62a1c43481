"""Models for text classification: a Hub checkpoint by name or local folder, or a BERT of any size with random weights.

Offline, `pretrained` looks for `<data root>/models/<checkpoint>/` first (a folder written by
`save_pretrained`, or a Hub snapshot), then a folder path, then the Hugging Face cache / Hub.
"""
from __future__ import annotations

from pathlib import Path

from ... import paths
from ...errors import ReprozooError
from ...registry import Registry

MODELS = Registry("model")


class ModelError(ReprozooError):
    """A model's files cannot be found."""


def _head_kwargs(num_labels: int) -> dict:
    return {"num_labels": num_labels, "problem_type": "regression" if num_labels == 1 else "single_label_classification"}


@MODELS.register("pretrained", source="Hugging Face Transformers AutoModelForSequenceClassification")
class Pretrained:
    """A pretrained checkpoint (`bert-base-cased`, or a folder) with a fresh classification head."""

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint

    def location(self) -> str:
        local = paths.find_raw(f"models/{self.checkpoint}")
        if local is not None:
            return str(local)
        if Path(self.checkpoint).expanduser().is_dir():
            return str(Path(self.checkpoint).expanduser())
        return self.checkpoint

    def _load(self, loader, **kwargs):
        where = self.location()
        try:
            return loader(where, **kwargs)
        except OSError as e:  # transformers raises OSError for missing files and for an unreachable Hub
            folders = " or ".join(str(r / "models" / self.checkpoint) for r in paths.data_roots())
            raise ModelError(f"model {self.checkpoint!r}: cannot load it from {where!r} ({str(e).splitlines()[0][:200]}). "
                             f"Offline, put its files (config.json, model.safetensors or pytorch_model.bin, and the "
                             f"tokenizer files) in {folders} (e.g. `save_pretrained` there on a machine with a network; "
                             f"set {paths.DATA_ENV} to use another folder).") from None

    def tokenizer(self):
        from transformers import AutoTokenizer

        return self._load(AutoTokenizer.from_pretrained)

    def model(self, num_labels: int):
        from transformers import AutoModelForSequenceClassification

        return self._load(AutoModelForSequenceClassification.from_pretrained, **_head_kwargs(num_labels))


@MODELS.register("bert_random", source="Devlin et al. 2019 (architecture); Turc et al. 2019 (the small sizes)")
class BertRandom:
    """A BERT with random weights and a WordPiece tokenizer from a vocabulary file (tests, timing, from-scratch baselines).

    `vocab` is a path under the data roots (`bert_vocab/vocab.txt`) or an absolute path."""

    def __init__(self, vocab: str = "bert_vocab/vocab.txt", lowercase: bool = True, hidden_size: int = 128,
                 layers: int = 2, heads: int = 2, intermediate_size: int = 512, max_position: int = 512,
                 dropout: float = 0.1):
        if hidden_size % heads:
            raise ValueError(f"hidden_size {hidden_size} must be a multiple of heads {heads}")
        self.vocab, self.lowercase = vocab, lowercase
        self.size = dict(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=intermediate_size, max_position_embeddings=max_position,
                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)

    def vocab_file(self) -> Path:
        p = Path(self.vocab).expanduser()
        found = p if p.is_absolute() and p.exists() else paths.find_raw(self.vocab)
        if found is None:
            where = " or ".join(str(r / self.vocab) for r in paths.data_roots())
            raise ModelError(f"WordPiece vocabulary {self.vocab!r} not found: put it at {where} "
                             f"(BERT's vocab.txt; set {paths.DATA_ENV} to use another folder)")
        return found

    def tokenizer(self):
        from transformers import BertTokenizer

        return BertTokenizer(vocab=str(self.vocab_file()), do_lower_case=self.lowercase)

    def model(self, num_labels: int):
        from transformers import BertConfig, BertForSequenceClassification

        vocab_size = sum(1 for _ in open(self.vocab_file(), encoding="utf-8"))
        return BertForSequenceClassification(BertConfig(vocab_size=vocab_size, **self.size, **_head_kwargs(num_labels)))
