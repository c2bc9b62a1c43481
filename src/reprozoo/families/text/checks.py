"""Sanity checks for a text recipe, on its real tokenizer, collator and model (see `reprozoo.checks`)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ...checks import Check, batch_size_scan, guarded, profile_top
from ...runs import RunContext
from ...seeding import seed_everything
from .engine import build_trainer


_TOKENIZED: dict[tuple, tuple] = {}  # (recipe hash, work dir) -> tokenized splits, shared by one `run_checks`


def _trainer(recipe, seed: int, work: Path):
    """A fresh Trainer (model initialised from `seed`); the recipe's data is tokenized once per check session."""
    ctx = RunContext(recipe, seed, work / f"seed{seed}-{time.monotonic_ns()}", work / "dvclive", threads=1, progress=False)
    key = (recipe.hash, work)
    trainer, task, extra = build_trainer(recipe, seed, ctx, data=_TOKENIZED.get(key))
    _TOKENIZED[key] = extra["data"]
    return trainer, task, extra


def _batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def input_audit(recipe, seed, work) -> Check:
    """What really reaches the model: one collated training batch."""
    trainer, task, _ = _trainer(recipe, seed, work)
    tok = trainer.processing_class
    b = _batch(trainer)
    ids, mask = b["input_ids"], b["attention_mask"]
    real = int(mask.sum())
    unk = int((ids == tok.unk_token_id).sum())
    problems = []
    if not bool((ids[:, 0] == tok.cls_token_id).all()):
        problems.append("not every sequence starts with [CLS]")
    seps = ((ids == tok.sep_token_id) & mask.bool()).sum(1)
    if not bool((seps == len(task.text)).all()):
        problems.append(f"expected {len(task.text)} [SEP] per sequence, found {sorted(set(seps.tolist()))}")
    if unk > 0.05 * real:
        problems.append(f"{100 * unk / real:.1f}% of the tokens are [UNK]: wrong vocabulary or casing?")
    if bool((ids[~mask.bool()] != tok.pad_token_id).any()):
        problems.append("masked positions hold tokens other than [PAD]")
    y = b["labels"]
    if task.labels is not None and (int(y.min()) < 0 or int(y.max()) >= task.num_labels):
        problems.append(f"labels outside [0, {task.num_labels - 1}]")
    if task.labels is None and not bool(torch.isfinite(y).all()):
        problems.append("non-finite regression targets")
    rows = [f"input_ids {tuple(ids.shape)} {ids.dtype}; attention mask covers {real}/{ids.numel()} positions "
            f"({100 * real / ids.numel():.0f}%: the rest is dynamic padding to the batch's longest sequence)",
            f"[UNK] tokens: {unk} ({100 * unk / real:.2f}%); token types: {sorted(set(b['token_type_ids'].flatten().tolist()))}"
            if "token_type_ids" in b else f"[UNK] tokens: {unk} ({100 * unk / real:.2f}%)",
            f"labels {tuple(y.shape)} {y.dtype}: " + (f"class counts {torch.bincount(y, minlength=task.num_labels).tolist()}"
                                                     if task.labels is not None else f"range [{float(y.min()):.2f}, {float(y.max()):.2f}]")]
    return Check("input audit", not problems, "; ".join(problems) or "[CLS]/[SEP] in place, padding masked, few [UNK], labels in range", rows)


def look_at_data(recipe, seed, work, out_png: Path, k: int = 6) -> Check:
    """Decoded training samples with their label names, and the token lengths against max_seq_length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trainer, task, _ = _trainer(recipe, seed, work)
    tok, train = trainer.processing_class, trainer.train_dataset
    limit = max(len(f["input_ids"]) for f in train.features)
    lengths = np.array([len(f["input_ids"]) for f in train.features])
    truncated = float((lengths >= limit).mean())
    rows = []
    if task.labels is not None:
        counts = np.bincount(train.labels.astype(int), minlength=task.num_labels)
        rows.append("training classes: " + ", ".join(f"{n} {c} ({100 * c / counts.sum():.1f}%)" for n, c in zip(task.labels, counts)))
        if counts.min() < 0.05 * counts.sum():
            rows[-1] += ": extreme imbalance, accuracy alone will mislead"
    rows.append(f"token lengths: median {int(np.median(lengths))}, 95th percentile {int(np.percentile(lengths, 95))}, max kept {limit}")
    for f in train.features[:k]:
        label = task.labels[int(f["labels"])] if task.labels else f"{float(f['labels']):.2f}"
        rows.append(f"`{label}`: {tok.decode(f['input_ids'])[:300]}")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(lengths, bins=40, color="tab:blue")
    ax.axvline(limit, color="tab:red", lw=1, label=f"longest kept: {limit}")
    ax.set_xlabel("tokens per training example", fontsize=8)
    ax.set_title(f"{recipe.name}: {100 * truncated:.1f}% at the length limit", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100, metadata={"Software": None})
    plt.close(fig)
    ok = truncated < 0.5
    return Check("look at the data", ok, f"{k} decoded samples below; token lengths in {out_png.name}; "
                 f"{100 * truncated:.1f}% of the training examples reach the length limit" +
                 ("" if ok else ": most inputs are cut, raise max_seq_length"), rows, [out_png.name])


def overfit_batch(recipe, seed, work, samples: int = 8, steps: int = 150, lr: float = 1e-3) -> Check:
    trainer, task, _ = _trainer(recipe, seed, work)
    model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(samples)])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    ok = losses[-1] < 0.05
    return Check("overfit one batch", ok, f"loss {losses[0]:.3f} -> {losses[-1]:.4f} on {samples} examples in {steps} AdamW steps"
                 + ("" if ok else ": the model cannot memorise 8 examples; check labels, learning rate, frozen layers"),
                 [f"step {i}: {losses[i]:.4f}" for i in (0, steps // 4, steps // 2, steps - 1)])


def padding_invariance(recipe, seed, work, samples: int = 4) -> Check:
    """The same example alone and padded inside a batch must give the same logits: the attention mask works."""
    trainer, task, _ = _trainer(recipe, seed, work)
    model = trainer.model.eval()
    feats = sorted((trainer.train_dataset[i] for i in range(32)), key=lambda f: len(f["input_ids"]))[:samples]
    longest = trainer.train_dataset[max(range(32), key=lambda i: len(trainer.train_dataset[i]["input_ids"]))]
    with torch.no_grad():
        alone = torch.cat([model(**{k: v for k, v in trainer.data_collator([f]).items() if k != "labels"}).logits for f in feats])
        padded = model(**{k: v for k, v in trainer.data_collator([*feats, longest]).items() if k != "labels"}).logits[:samples]
    diff = float((alone - padded).abs().max())
    ok = diff < 1e-4
    return Check("padding invariance", ok, f"largest absolute logit difference {diff:.2e} between examples alone and padded to "
                 f"{len(longest['input_ids'])} tokens" + ("" if ok else ": padding leaks into the model (attention mask?)"), [])


def trivial_solution(recipe, seed, work, samples: int = 64, steps: int = 60) -> Check:
    """Inputs that spell out the label (one vocabulary token per class) must be learned almost at once."""
    trainer, task, _ = _trainer(recipe, seed, work)
    if task.labels is None:
        return Check("trivial solution", True, "skipped: a regression task has no class to spell out", [])
    model, tok = trainer.model.train(), trainer.processing_class
    vocab = [i for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if i not in tok.all_special_ids]
    feats = [trainer.train_dataset[i] for i in range(min(samples, len(trainer.train_dataset)))]
    carried = [{"input_ids": [tok.cls_token_id] + [vocab[int(f["labels"])]] * 3 + [tok.sep_token_id], "labels": f["labels"]} for f in feats]
    batch = trainer.data_collator(carried)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = 100 * float((model(**{k: v for k, v in batch.items() if k != "labels"}).logits.argmax(-1) == batch["labels"]).float().mean())
    ok = acc == 100
    return Check("trivial solution", ok, f"{acc:.0f}% after {steps} steps on inputs that spell out the label"
                 + ("" if ok else ": the wiring between labels and loss is broken (label column, num_labels, head)"), [])


def mode_audit(recipe, seed, work) -> Check:
    """Dropout acts in train mode only; eval mode is deterministic."""
    trainer, _, _ = _trainer(recipe, seed, work)
    model = trainer.model
    batch = {k: v for k, v in trainer.data_collator([trainer.train_dataset[i] for i in range(8)]).items() if k != "labels"}
    with torch.no_grad():
        model.eval()
        e1, e2 = model(**batch).logits, model(**batch).logits
        model.train()
        t1, t2 = model(**batch).logits, model(**batch).logits
    dropout = max((m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)), default=0.0)
    eval_same, train_differs = torch.equal(e1, e2), not torch.equal(t1, t2)
    ok = eval_same and (train_differs or dropout == 0)
    detail = ("eval is deterministic" + (", train mode applies dropout" if dropout else "; the model has no dropout")
              if ok else "eval mode gives different outputs for the same batch" if not eval_same
              else f"train mode gives identical outputs although dropout is {dropout}: is the model ever put in train mode?")
    return Check("mode audit", ok, detail, [])


def determinism(recipe, seed, work, steps: int = 5) -> Check:
    def losses(s):
        trainer, _, _ = _trainer(recipe, s, work)
        model, it = trainer.model.train(), iter(trainer.get_train_dataloader())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        out = []
        for _ in range(steps):
            loss = model(**next(it)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(float(loss.detach()))
        return out

    a, b, c = losses(seed), losses(seed), losses(seed + 1)
    ok = a == b and a != c
    detail = ("same seed, same losses; another seed, other losses" if ok else
              "the same seed gave different losses" if a != b else "another seed gave the same losses: is the seed used?")
    return Check("determinism", ok, detail, [f"seed {seed}: {[round(x, 5) for x in a]}", f"seed {seed + 1}: {[round(x, 5) for x in c]}"])


def throughput(recipe, seed, work, steps: int = 8) -> Check:
    trainer, _, _ = _trainer(recipe, seed, work)
    model, loader = trainer.model.train(), trainer.get_train_dataloader()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    it = iter(loader)
    seed_everything(seed, threads=1)
    t_data = t_step = 0.0
    n = 0
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        t_data, t_step = t_data + t1 - t0, t_step + time.perf_counter() - t1
        n += len(batch["input_ids"])
    share = t_data / (t_data + t_step)
    data, collate, bs0 = loader.dataset, loader.collate_fn, trainer.args.per_device_train_batch_size

    def step(bs):
        b = {k: v.to(model.device) for k, v in collate([data[i % len(data)] for i in range(bs)]).items()}
        loss = model(**b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    rows = [batch_size_scan(step, [2 ** k for k in range(3, 10) if 2 ** k <= 2 * bs0] or [bs0]),
            profile_top(lambda: [next(it) for _ in range(4)])]
    return Check("throughput", share < 0.5, f"{n / (t_data + t_step):.0f} examples/s; {100 * share:.0f}% of each step "
                 "waits for tokenised batches" + (": input-bound" if share >= 0.5 else ""), rows)


def run_checks(recipe, seed: int, out_png: Path) -> list[Check]:
    checks = [("input audit", input_audit), ("overfit one batch", overfit_batch), ("trivial solution", trivial_solution),
              ("mode audit", mode_audit), ("padding invariance", padding_invariance), ("determinism", determinism),
              ("throughput", throughput)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        try:
            results = [guarded(name, f, recipe, seed, work) for name, f in checks]
            return results + [guarded("look at the data", look_at_data, recipe, seed, work, out_png)]
        finally:
            _TOKENIZED.pop((recipe.hash, work), None)


def render_samples(recipe, ids: list[int], titles: list[str], out: Path) -> Path:
    """The evaluation examples at `ids` of the first evaluation split, their text as the dataset holds it,
    each under its title, as Markdown: `reprozoo errors`' highest-loss list for text."""
    from ...datasets_store import ensure_prepared
    from ...io import atomic_write_text
    from .glue import DATASETS, read_prepared

    cfg = recipe.config
    task = DATASETS.build(cfg["dataset"]).task
    records = read_prepared(ensure_prepared(recipe.family, cfg["dataset"]["name"]), task.splits[1])
    lines = [f"# {recipe.name}: evaluation examples ({task.splits[1]} split)", ""]
    for i, title in zip(ids, titles):
        text = " ||| ".join(str(records[int(i)][c]) for c in task.text)
        lines += [f"- **#{i}** {title}: {text}"]
    out = out.with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
