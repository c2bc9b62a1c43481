"""Fine-tuning on Hugging Face's Trainer, set up as `examples/pytorch/text-classification/run_glue.py` does.

Differences from run_glue that change no number: dynamic padding (the tokenizer pads each batch to its
longest sequence; attention masks make padding invisible to BERT), and the optimizer built here so
that tricks can shape its parameter groups (AdamW with run_glue's defaults otherwise).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ... import distributed
from ...datasets_store import ensure_prepared
from ...seeding import seed_everything
from . import tricks
from .glue import DATASETS, compute_metrics, read_prepared
from .models import MODELS


class TokenizedSplit(torch.utils.data.Dataset):
    """One split tokenized once (truncation only; padding happens per batch in the collator)."""

    def __init__(self, records: list[dict], task, tokenizer, max_seq_length: int):
        texts = [[r[c] for r in records] for c in task.text]
        enc = tokenizer(*texts, truncation=True, max_length=max_seq_length)
        self.features = [{k: enc[k][i] for k in enc} for i in range(len(records))]
        dtype = torch.float32 if task.labels is None else torch.long
        for f, r in zip(self.features, records):
            f["labels"] = torch.tensor(r["label"], dtype=dtype)
        self.labels = np.array([r["label"] for r in records])

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i]


class LiveCallback(TrainerCallback):
    """Trainer logs to DVCLive at the Trainer's global step (not DVCLive's own counter), so a resumed run
    continues the curves. Names follow the classification family: `loss` (training), `lr`, `grad_norm`
    (every optimizer step, from ReprozooTrainer's guard), the eval metrics by name and `eval_loss`; timings
    and end-of-training summaries are left out."""

    SKIP = ("runtime", "samples_per_second", "steps_per_second", "total_flos", "epoch", "step", "grad_norm")

    def __init__(self, curves_dir: Path, resumed: bool):
        from dvclive import Live

        self.live = Live(dir=str(curves_dir), report=None, save_dvc_exp=False, dvcyaml=None, monitor_system=False, resume=resumed)
        self.trainer = None  # set by build_trainer: the guard's gradient norm of the step

    def on_step_end(self, args, state, control, **kwargs):
        norm = getattr(self.trainer, "last_grad_norm", None)
        if norm is not None:
            self.live.step = state.global_step
            self.live.log_metric("grad_norm", norm)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.live.step = state.global_step
        for k, v in (logs or {}).items():
            if k.endswith(self.SKIP) or k.startswith("train_") or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            name = {"learning_rate": "lr"}.get(k, k)
            name = name if name == "eval_loss" else name.removeprefix("eval_")
            self.live.log_metric(name, float(v))
        self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs):
        self.live.end()


class ReprozooTrainer(Trainer):
    """Trainer with the family's tricks (EMA weights for evaluation, stored with each checkpoint) and a
    guard that stops training at the first step whose loss or gradients are not finite."""

    ema = None  # a tricks.EMA, set by `build_trainer`

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and not bool(torch.isfinite(loss.detach()).all()):
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
            bad = "the logits" if not bool(torch.isfinite(logits.detach()).all()) else "the loss only (the logits are finite)"
            self._stop(f"the forward pass: loss {float(loss.detach()):g}, non-finite values in {bad}")
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not self.args.fp16:  # with fp16 the grad scaler itself skips steps with inf gradients
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
            self.last_grad_norm = float(norm)  # with gradient accumulation the last micro-batch's is the step's
            if not bool(torch.isfinite(norm)):
                bad = [n for n, p in model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
                self._stop(f"the backward pass: loss {float(loss):g} is finite but the gradient norm is {float(norm):g} "
                           f"({len(bad)} parameters with non-finite gradients, first {bad[0]})")
        return loss

    def _stop(self, what: str):
        from ...errors import RunError

        last = get_last_checkpoint(self.args.output_dir) if Path(self.args.output_dir).is_dir() else None
        raise RunError(f"step {self.state.global_step + 1}: non-finite values in {what}. Training stopped; "
                       + (f"the last good checkpoint, {last}, is kept and a new run resumes from it. " if last else
                          "no checkpoint was written before it. ")
                       + "Look at the learning rate, the labels and the inputs of that batch, or clip gradients (optim.max_grad_norm).")

    def evaluate(self, *args, **kwargs):
        with self.ema.swapped(self.model) if self.ema else _nothing():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with self.ema.swapped(self.model) if self.ema else _nothing():
            return super().predict(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.ema:
            self.ema.save(Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}")


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _data(cfg: dict, family: str, tokenizer):
    dataset = DATASETS.build(cfg["dataset"])
    data_dir = ensure_prepared(family, cfg["dataset"]["name"])
    task, n = dataset.task, dataset.max_seq_length
    train = TokenizedSplit(read_prepared(data_dir, "train"), task, tokenizer, n)
    evals = {s: TokenizedSplit(read_prepared(data_dir, s), task, tokenizer, n) for s in task.splits[1:]}
    return task, train, evals


def build_trainer(recipe, seed: int, ctx, data=None) -> tuple[ReprozooTrainer, object, dict]:
    """The Trainer of one run; `data` is `extra["data"]` of an earlier call for the same recipe (its tokenized splits)."""
    cfg = tricks.patch_recipe(recipe.config)
    seed_everything(seed, deterministic=True, threads=ctx.threads)
    spec = MODELS.build(cfg["model"])
    tokenizer = spec.tokenizer()
    task, train_set, eval_sets = data or _data(cfg, recipe.family, tokenizer)
    seed_everything(seed, deterministic=True, threads=ctx.threads)  # the head's init depends only on the seed
    model = spec.model(task.num_labels)
    tricks.patch_model(model, cfg["tricks"])
    s, e = cfg["schedule"], cfg["eval"]
    steps_per_epoch = math.ceil(len(train_set) / s["batch_size"])
    total = math.ceil(s["epochs"] * steps_per_epoch)
    resume = get_last_checkpoint(str(ctx.work_dir)) if Path(ctx.work_dir).is_dir() else None
    ctx.resumed_from = int(re.search(r"checkpoint-(\d+)$", resume).group(1)) if resume else 0
    if resume:
        from ...frameworks.mmrunner import truncate_curves

        truncate_curves(ctx.curves_dir, ctx.resumed_from)
    devices = cfg.get("devices", 1)
    ddp = {}
    if devices > 1:  # under torchrun: the Trainer sets DDP up itself; each device takes its share of the batch
        ddp = {"ddp_backend": "nccl" if torch.cuda.is_available() else "gloo"}
        ctx.record["distributed"] = {**distributed.shares(s["batch_size"], devices), "backend": ddp["ddp_backend"]}
    args = TrainingArguments(
        output_dir=str(ctx.work_dir), **ddp,
        per_device_train_batch_size=s["batch_size"] // devices, per_device_eval_batch_size=-(-e["batch_size"] // devices),
        max_steps=total, seed=seed, data_seed=seed,
        max_grad_norm=cfg["optim"]["max_grad_norm"] or 0.0,
        label_smoothing_factor=cfg["label_smoothing"],
        eval_strategy="steps", eval_steps=min(e["interval"], total),
        logging_strategy="steps", logging_steps=min(e["interval"], total),
        save_strategy="steps", save_steps=cfg["checkpoint_interval"], save_total_limit=1,
        report_to="none", disable_tqdm=not ctx.progress, use_cpu=not torch.cuda.is_available(),
        fp16=bool(cfg["amp"]) and torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    optimizer, scheduler = tricks.optimizer_and_schedule(model, cfg, total)
    trainer = ReprozooTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_sets if len(eval_sets) > 1 else next(iter(eval_sets.values())),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=lambda p: compute_metrics(task, _predictions(task, p.predictions), p.label_ids),
        optimizers=(optimizer, scheduler), callbacks=[live := LiveCallback(ctx.curves_dir, bool(resume))],
    )
    live.trainer = trainer
    trainer.ema = tricks.ema_for(model, cfg["tricks"])
    if trainer.ema is not None:
        trainer.add_callback(trainer.ema.callback())
        if resume:
            trainer.ema.load(Path(resume))
    return trainer, task, {"eval_sets": eval_sets, "resume": resume, "data": (task, train_set, eval_sets)}


def _predictions(task, logits) -> np.ndarray:
    logits = logits[0] if isinstance(logits, tuple) else logits
    return np.asarray(logits).reshape(-1) if task.labels is None else np.asarray(logits).argmax(-1)


def predict(trainer, task, dataset: TokenizedSplit, out_dir: Path | None = None, name: str = "predictions.csv"):
    """Per-example predictions on `dataset`, in its order, and the metrics computed from them; with
    `out_dir`, also the predictions file (`reprozoo.predictions`) written there."""
    out = trainer.predict(dataset)
    preds = _predictions(task, out.predictions)
    metrics = compute_metrics(task, preds, dataset.labels)
    metrics["loss"] = float(out.metrics["test_loss"])
    if out_dir is not None:
        write_predictions(out_dir, task, out.predictions, dataset.labels, name)
    return preds, metrics


def write_predictions(out_dir: Path, task, logits, labels, name: str) -> Path:
    """`id,label,prediction,score,loss`: classes with their softmax probabilities; regression (STS-B) with
    the prediction as score and its squared error as loss."""
    from ...predictions import write_labels, write_scores

    logits = torch.as_tensor(np.asarray(logits[0] if isinstance(logits, tuple) else logits), dtype=torch.float64)
    if task.labels is None:
        return write_scores(out_dir, np.asarray(labels, dtype=np.float64), logits.reshape(-1).tolist(), name)
    return write_labels(out_dir, None, torch.as_tensor(labels), logits.softmax(-1), name)


def _file(split: str, splits) -> str:
    """predictions.csv, or predictions.<split>.csv for a task with several evaluation splits (MNLI)."""
    return "predictions.csv" if len(splits) == 1 else f"predictions.{split}.csv"


def train(recipe, seed: int, ctx) -> dict:
    trainer, task, extra = build_trainer(recipe, seed, ctx)
    trainer.train(resume_from_checkpoint=extra["resume"])
    sets = extra["eval_sets"]
    out = ctx.outputs if distributed.world()[0] == 0 else None
    return {split: predict(trainer, task, ds, out, _file(split, sets))[1] for split, ds in sets.items()}


def evaluate(recipe, checkpoint, out_dir: Path):
    """The task's headline metric of a fine-tuned checkpoint (a state dict of the recipe's model) on its
    first evaluation split; every split's predictions go to `out_dir`."""
    import tempfile

    from ...checkpoints import load_weights
    from ...errors import ConfigError
    from ...family_api import EvalResult
    from ...runs import RunContext

    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(recipe=recipe, seed=0, work_dir=Path(tmp) / "work", curves_dir=Path(tmp) / "curves", threads=None,
                         progress=False)
        trainer, task, extra = build_trainer(recipe, 0, ctx)
        obj = load_weights(checkpoint)
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        try:
            trainer.model.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()}, strict=True)
        except RuntimeError as e:
            raise ConfigError(checkpoint, None, f"the checkpoint does not fit the model of recipe {recipe.name!r}: "
                                                f"{str(e).splitlines()[-1].strip()[:300]}") from None
        sets = extra["eval_sets"]
        results = {split: predict(trainer, task, ds, out_dir, _file(split, sets)) for split, ds in sets.items()}
    split = next(iter(sets))
    preds, metrics = results[split]
    labels = sets[split].labels
    headline = task.metrics[0]
    correct = int((preds == labels).sum()) if headline == "accuracy" else None  # a proportion: exact binomial CI
    return EvalResult(split=split, total=len(labels), metric=headline, value=metrics[headline], correct=correct,
                      metrics={k: v for k, v in metrics.items() if k != "loss"},
                      predictions=Path(out_dir) / _file(split, sets))
