"""Fine-tuning throughput (samples/s) of a BERT on real GLUE sequences, through the text family's Trainer.

Random weights are fine for timing. `--size base` is bert-base's shape (12 layers, 768 hidden, 12
heads, 3072 intermediate) with the bert-base-uncased vocabulary; the sequences are SST-2's training
sentences, tokenised and dynamically padded as a run does. The first `--warmup` steps are not timed.

    REPROZOO_DATA=../shared/data uv run python benchmarks/text_throughput.py --size base --steps 20 --warmup 3
    REPROZOO_DATA=../shared/data uv run python benchmarks/text_throughput.py --size base --steps 300 --warmup 20 --amp   # GPU
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from reprozoo.families.text.engine import build_trainer
from reprozoo.recipes import load_recipe
from reprozoo.runs import RunContext

SIZES = {"tiny": dict(hidden_size=128, layers=2, heads=2, intermediate_size=512),
         "base": dict(hidden_size=768, layers=12, heads=12, intermediate_size=3072)}


class _Clock(TrainerCallback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--amp", action="store_true", help="fp16 mixed precision (GPU only)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "recipes/text/timing.yaml"
        spec.parent.mkdir(parents=True)
        size = SIZES[a.size]
        spec.write_text(
            "family: text\ndataset: {name: glue_sst2, max_seq_length: 128}\n"
            f"model: {{name: bert_random, vocab: bert_vocab/vocab.txt, hidden_size: {size['hidden_size']}, layers: {size['layers']}, "
            f"heads: {size['heads']}, intermediate_size: {size['intermediate_size']}}}\n"
            f"optim: {{lr: 2.0e-5}}\nschedule: {{epochs: 1, batch_size: {a.batch}}}\n"
            f"eval: {{interval: 1000000}}\ncheckpoint_interval: 1000000\namp: {str(a.amp).lower()}\n")
        recipe = load_recipe(spec)
        ctx = RunContext(recipe, 0, Path(tmp) / "work", Path(tmp) / "work/dvclive", a.threads, progress=False)
        trainer, _, _ = build_trainer(recipe, 0, ctx)
        trainer.args.max_steps = a.steps
        trainer.args.eval_strategy = "no"
        clock = _Clock(a.warmup)
        trainer.add_callback(clock)
        trainer.train()
        timed = a.steps - a.warmup
        out = {"size": a.size, "batch": a.batch, "amp": a.amp, "threads": a.threads, "timed_steps": timed,
               "seconds": round(clock.end - clock.start, 3), "samples_per_s": round(timed * a.batch / (clock.end - clock.start), 1),
               "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})",
               "torch": torch.__version__}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
