"""The text family: GLUE readers (TSV and Hub paths agree), metrics, a real fine-tuning run of a tiny BERT,
tricks, and verdicts for test-server claims."""
import json
import math

import numpy as np
import pytest

from conftest import write
from reprozoo.errors import ConfigError

# GLUE's TSV distribution, quirks included: CoLA has no header; MRPC starts with a byte-order mark, holds
# stray quotes and rebuilds its train split from msr_paraphrase_train.txt minus dev_ids.tsv; STS-B scores
# are floats; RTE labels are strings; MNLI has matched and mismatched dev sets.
COLA_TRAIN = "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\nbc01\t1\t\tHe said \"hi\" .\n"
COLA_DEV = "gj04\t0\t*\tThe more does Bill smoke.\ngj04\t1\t\tThe sailors rode the breeze.\n"
MRPC_HEAD = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
MRPC_MSR = MRPC_HEAD + ("1\t702876\t702977\tAmrozi accused his brother , whom he called \" the witness \" .\tReferring to him as \" the witness \" .\n"
                        "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought Dominick 's in 1995 .\n"
                        "1\t1355540\t1355592\tHe said the pie business doesn 't fit .\t\" The pie business does not fit .\n")
MRPC_DEV = MRPC_HEAD + "1\t1355540\t1355592\tHe said the pie business doesn 't fit .\t\" The pie business does not fit .\n"
STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
STSB_TRAIN = STSB_HEAD + ("0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n"
                          "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a \"flute\".\tA man is playing a flute.\t3.800\n")
STSB_DEV = STSB_HEAD + "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man is dancing.\tA man wearing a hat is dancing.\t0.333\n"
RTE_HEAD = "index\tsentence1\tsentence2\tlabel\n"
RTE_TRAIN = RTE_HEAD + "0\tNo weapons found in Iraq.\tWeapons found in Iraq.\tnot_entailment\n1\tA cat sat.\tAn animal sat.\tentailment\n"
RTE_DEV = RTE_HEAD + "0\tDana Reeve died at 44.\tChristopher Reeve had an accident.\tnot_entailment\n"
MNLI_HEAD = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse"
             "\tsentence1\tsentence2\tlabel1\tgold_label\n")


def _mnli(rows):
    return MNLI_HEAD + "".join(f"{i}\t1\t1n\tgov\t(\t(\t(\t(\t{a}\t{b}\t{g}\t{g}\n" for i, (a, b, g) in enumerate(rows))


MNLI = {"train.tsv": _mnli([("It rains.", "It is wet.", "entailment"), ("It rains.", "It is dry.", "contradiction")]),
        "dev_matched.tsv": _mnli([("I ran.", "I moved.", "neutral")]),
        "dev_mismatched.tsv": _mnli([("He sang.", "He was silent.", "contradiction"), ("She ate.", "She was hungry.", "neutral")])}

# The same examples as the Hub's nyu-mll/glue holds them (its column names and ClassLabel indices).
HUB = {
    "cola": {"train": [("Our friends won't buy this analysis.", 1), ("They drank the pub.", 0), ("He said \"hi\" .", 1)],
             "validation": [("The more does Bill smoke.", 0), ("The sailors rode the breeze.", 1)]},
    "mrpc": {"train": [("Amrozi accused his brother , whom he called \" the witness \" .", "Referring to him as \" the witness \" .", 1),
                       ("Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's in 1995 .", 0)],
             "validation": [("He said the pie business doesn 't fit .", "\" The pie business does not fit .", 1)]},
    "stsb": {"train": [("A plane is taking off.", "An air plane is taking off.", 5.0), ("A man is playing a \"flute\".", "A man is playing a flute.", 3.8)],
             "validation": [("A man is dancing.", "A man wearing a hat is dancing.", 0.333)]},
    "rte": {"train": [("No weapons found in Iraq.", "Weapons found in Iraq.", 1), ("A cat sat.", "An animal sat.", 0)],
            "validation": [("Dana Reeve died at 44.", "Christopher Reeve had an accident.", 1)]},
    "mnli": {"train": [("It rains.", "It is wet.", 0), ("It rains.", "It is dry.", 2)],
             "validation_matched": [("I ran.", "I moved.", 1)],
             "validation_mismatched": [("He sang.", "He was silent.", 2), ("She ate.", "She was hungry.", 1)]},
}


def _glue_tsvs(root):
    g = root / "glue"
    write(g / "CoLA/train.tsv", COLA_TRAIN), write(g / "CoLA/dev.tsv", COLA_DEV)
    write(g / "MRPC/msr_paraphrase_train.txt", MRPC_MSR), write(g / "MRPC/dev.tsv", MRPC_DEV)
    write(g / "MRPC/dev_ids.tsv", "1355540\t1355592\n")
    write(g / "MRPC/train.tsv", MRPC_HEAD)  # the short train.tsv: the rebuild from msr_paraphrase_train.txt must win
    write(g / "STS-B/train.tsv", STSB_TRAIN), write(g / "STS-B/dev.tsv", STSB_DEV)
    write(g / "RTE/train.tsv", RTE_TRAIN), write(g / "RTE/dev.tsv", RTE_DEV)
    for name, text in MNLI.items():
        (g / "MNLI").mkdir(parents=True, exist_ok=True)
        (g / "MNLI" / name).write_text(text)
    return g


def _hub_snapshot(root):
    """A local copy of the Hub repository's layout: <config>/<split>-00000-of-00001.parquet."""
    import datasets

    from reprozoo.families.text.glue import TASKS

    snap = root / "hf/nyu-mll/glue"
    for config, splits in HUB.items():
        task = TASKS[config]
        label = datasets.Value("float32") if task.labels is None else datasets.ClassLabel(names=list(task.labels))
        features = datasets.Features({**{c: datasets.Value("string") for c in task.text}, "label": label, "idx": datasets.Value("int32")})
        for split, rows in splits.items():
            cols = {c: [r[i] for r in rows] for i, c in enumerate(task.text)}
            ds = datasets.Dataset.from_dict({**cols, "label": [r[-1] for r in rows], "idx": list(range(len(rows)))}, features=features)
            (snap / config).mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(snap / config / f"{split}-00000-of-00001.parquet"))
    return snap


@pytest.mark.parametrize("task", ["cola", "mrpc", "stsb", "rte", "mnli"])
def test_tsv_and_hub_paths_yield_the_same_examples(tmp_path, task):
    from reprozoo.families.text.glue import TASKS, load_hub_split, read_tsv_split, records_from_hub

    t = TASKS[task]
    glue, snap = _glue_tsvs(tmp_path), _hub_snapshot(tmp_path)
    for split in t.splits:
        tsv = read_tsv_split(t, glue / t.folder, split)
        hub = records_from_hub(t, load_hub_split(t, split, snap))
        assert tsv == hub, split
        assert len(tsv) == len(HUB[task][{"train": "train", "dev": "validation"}.get(split, split.replace("dev", "validation"))])
    if task == "stsb":
        assert [r["label"] for r in read_tsv_split(t, glue / t.folder, "train")] == [5.0, 3.8]
    if task == "mrpc":  # rebuilt train: the dev pair is left out, stray quotes kept verbatim
        train = read_tsv_split(t, glue / t.folder, "train")
        assert [r["label"] for r in train] == [1, 0] and train[0]["sentence1"].count('"') == 2


def test_prepare_uses_the_data_root_and_says_where_files_go(project, tmp_path, monkeypatch):
    from reprozoo.datasets_store import prepare
    from reprozoo.families.text.glue import DataError, read_prepared

    _glue_tsvs(tmp_path / "store")
    monkeypatch.setenv("REPROZOO_DATA", str(tmp_path / "store"))
    out = prepare("text", "glue_mnli")
    assert sorted(p.name for p in out.iterdir()) == ["dev_matched.jsonl", "dev_mismatched.jsonl", "meta.json", "train.jsonl"]
    assert [r["label"] for r in read_prepared(out, "dev_mismatched")] == [2, 1]
    assert json.loads((out / "meta.json").read_text())["splits"] == {"train": 2, "dev_matched": 1, "dev_mismatched": 2}
    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr("reprozoo.families.text.glue.load_hub_split", offline)  # no Hub: the error says where the TSVs go
    with pytest.raises(DataError, match=r"Hub is unreachable \(ConnectionError.*TSVs \(train.tsv, dev.tsv\) at .*store/glue/SST-2"):
        prepare("text", "glue_sst2")
    assert not (project / "datasets/glue_sst2").exists()


def test_bad_label_names_the_file_and_row(tmp_path):
    from reprozoo.families.text.glue import TASKS, DataError, read_tsv_split

    write(tmp_path / "RTE/dev.tsv", RTE_HEAD + "0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"RTE/dev.tsv: row 1: label 'maybe' is not one of \['entailment', 'not_entailment'\]"):
        read_tsv_split(TASKS["rte"], tmp_path / "RTE", "dev")


def test_metrics_match_a_hand_computation():
    from reprozoo.families.text.glue import TASKS, compute_metrics

    y = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    p = np.array([1, 0, 1, 0, 1, 1, 0, 1])
    tp, tn, fp, fn = 4, 2, 1, 1
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_metrics(TASKS["cola"], p, y) == pytest.approx({"matthews_correlation": 100 * mcc, "accuracy": 75.0})
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert compute_metrics(TASKS["mrpc"], p, y) == pytest.approx({"f1": 100 * f1, "accuracy": 75.0})
    s = np.array([0.1, 0.4, 0.35, 0.8])
    g = np.array([0.0, 1.0, 2.0, 3.0])
    pearson = np.corrcoef(s, g)[0, 1]
    spearman = np.corrcoef([0, 2, 1, 3], [0, 1, 2, 3])[0, 1]  # ranks
    assert compute_metrics(TASKS["stsb"], s, g) == pytest.approx({"pearson": 100 * pearson, "spearmanr": 100 * spearman})


WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "was", "plot", "acting", "very", "and", "a"]


def _sst2_like(root, n_train=256, n_dev=64, seed=0):
    """An SST-2-format set whose label is whether the sentence holds a positive word: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    pos, neg, filler = WORDS[:3], WORDS[3:6], WORDS[6:]

    def rows(n):
        out = []
        for i in range(n):
            label = int(rng.integers(2))
            words = list(rng.choice(filler, size=int(rng.integers(3, 9))))
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(pos if label else neg)))
            out.append(f"{' '.join(words)} \t{label}\n")
        return "sentence\tlabel\n" + "".join(out)

    write(root / "glue/SST-2/train.tsv", rows(n_train))
    write(root / "glue/SST-2/dev.tsv", rows(n_dev))
    write(root / "vocab.txt", "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")


TINY_TEXT = """\
family: text
dataset: {{name: glue_sst2, max_seq_length: 16}}
model: {{name: bert_random, vocab: {vocab}, hidden_size: 32, layers: 1, heads: 2, intermediate_size: 64, max_position: 32, dropout: 0.0}}
optim: {{lr: 3.0e-3}}
schedule: {{epochs: {epochs}, batch_size: 16, warmup: 0.1}}
eval: {{batch_size: 32, interval: 16}}
checkpoint_interval: 16
{extra}
"""


@pytest.fixture
def sst2_project(project, tmp_path, monkeypatch):
    store = tmp_path / "store"
    _sst2_like(store)
    monkeypatch.setenv("REPROZOO_DATA", str(store))
    write(project / "recipes/text/tiny_sst2.yaml", TINY_TEXT.format(vocab=store / "vocab.txt", epochs=6, extra=""))
    return project


def test_tiny_bert_learns_and_predictions_align_with_labels(sst2_project):
    from reprozoo.families.text.engine import build_trainer, predict
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import RunContext, execute, run_dir

    recipe = load_recipe("tiny_sst2")
    metrics = execute(recipe, 0, progress=False)
    assert metrics["dev"]["accuracy"] > 90, metrics  # chance is 50
    curve = (run_dir("tiny_sst2", 0) / "dvclive/plots/metrics/loss.tsv").read_text().splitlines()[1:]
    losses = [float(line.split("\t")[-1]) for line in curve]
    assert losses[-1] < 0.5 * losses[0], losses  # training loss falls
    norms = (run_dir("tiny_sst2", 0) / "dvclive/plots/metrics/grad_norm.tsv").read_text().splitlines()[1:]
    steps = [int(line.split("\t")[0]) for line in norms]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > len(curve)  # every optimizer step, not every log
    assert all(float(line.split("\t")[1]) > 0 for line in norms)
    # Predictions come back in the dev set's order: their accuracy against the file's labels is the
    # reported one, and a model that has not trained scores about chance on the same labels.
    ctx = RunContext(recipe, 0, sst2_project / "scratch", sst2_project / "scratch/dvclive", 1, progress=False)
    trainer, task, extra = build_trainer(recipe, 0, ctx)
    dev = extra["eval_sets"]["dev"]
    preds, untrained = predict(trainer, task, dev)
    assert len(preds) == len(dev) == 64 and untrained["accuracy"] < 75
    from reprozoo.families.text.glue import read_prepared

    labels = [r["label"] for r in read_prepared(sst2_project / "datasets/glue_sst2", "dev")]
    assert list(dev.labels) == labels


def test_same_seed_same_numbers_and_resume_continues(sst2_project):
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import RunContext, execute, run_dir
    from reprozoo.families.text.engine import build_trainer

    write(sst2_project / "recipes/text/tiny_sst2_1ep.yaml", "extends: tiny_sst2\nschedule: {epochs: 1}\n")
    recipe = load_recipe("tiny_sst2_1ep")
    a = execute(recipe, 3, progress=False)
    b = execute(recipe, 3, progress=False, force=True)
    assert a == b
    # A run killed after its first checkpoint resumes from it and ends with the same numbers.
    work = sst2_project / ".reprozoo/work/tiny_sst2_1ep" / f"seed4-{recipe.hash}"
    ctx = RunContext(recipe, 4, work, work / "dvclive", 1, progress=False)
    trainer, _, _ = build_trainer(recipe, 4, ctx)
    trainer.args.max_steps = 8  # 16 steps in all (one epoch); stop half-way after writing checkpoint-8
    trainer.args.save_steps = 8
    trainer.train()
    assert (work / "checkpoint-8").is_dir()
    resumed = execute(recipe, 4, progress=False)
    fresh = execute(recipe, 4, progress=False, force=True)
    import json as _json

    assert _json.loads((run_dir("tiny_sst2_1ep", 4) / "env.json").read_text())["resumed_from_iter"] == 0  # the forced re-run
    assert resumed == fresh


def test_missing_model_files_say_where_to_put_them(project, monkeypatch):
    from reprozoo.families.text.models import ModelError, Pretrained

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: the env var alone is too late
    monkeypatch.setenv("REPROZOO_DATA", str(project / "store"))
    with pytest.raises(ModelError, match=r"bert-base-cased.*store/models/bert-base-cased"):
        Pretrained("bert-base-cased").tokenizer()


def test_pretrained_model_from_a_local_folder(project, tmp_path, monkeypatch):
    """A folder written by save_pretrained under <data root>/models/<name> stands in for the Hub."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from reprozoo.families.text.models import Pretrained

    _sst2_like(tmp_path)
    folder = tmp_path / "models/org/tiny-bert"
    BertTokenizer(vocab=str(tmp_path / "vocab.txt")).save_pretrained(folder)
    encoder = BertModel(BertConfig(vocab_size=19, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    encoder.save_pretrained(folder)  # an encoder without a head, as bert-base-cased is published
    monkeypatch.setenv("REPROZOO_DATA", str(tmp_path))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    spec = Pretrained("org/tiny-bert")
    assert spec.tokenizer()("good film")["input_ids"] == [2, 5, 12, 3]
    m = spec.model(3)
    assert m.num_labels == 3 and m.classifier.out_features == 3
    assert torch.equal(m.bert.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)


def test_tricks_shape_the_optimizer_and_schedule():
    from transformers import BertConfig, BertForSequenceClassification

    from reprozoo.families.text.tricks import optimizer_and_schedule, patch_recipe

    model = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                                     intermediate_size=32))
    base = {"optim": {"lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.999], "eps": 1e-8},
            "schedule": {"epochs": 1, "batch_size": 8, "lr_schedule": "linear", "warmup": 0.0}, "tricks": []}
    opt, sched = optimizer_and_schedule(model, patch_recipe(base), 100)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(1e-3, 0.01)]
    tricks = [{"name": "layer_decay", "rate": 0.5}, {"name": "no_bias_decay"}, {"name": "warmup", "fraction": 0.1, "start_factor": 0.0}]
    opt, sched = optimizer_and_schedule(model, patch_recipe({**base, "tricks": tricks}), 100)
    lr_of = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}  # before the warmup factor
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["bert.encoder.layer.2.output.dense.weight"])] == pytest.approx(0.5e-3)
    assert lr_of[id(named["bert.encoder.layer.0.output.dense.weight"])] == pytest.approx(0.125e-3)
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(0.0625e-3)
    assert wd_of[id(named["bert.encoder.layer.0.output.dense.bias"])] == 0.0
    assert wd_of[id(named["bert.encoder.layer.0.output.LayerNorm.weight"])] == 0.0
    assert wd_of[id(named["bert.encoder.layer.0.output.dense.weight"])] == 0.01
    factors = []
    for _ in range(100):
        factors.append(sched.get_last_lr()[0] / opt.param_groups[0]["initial_lr"])
        opt.step(), sched.step()
    assert factors[0] == 0.0 and factors[5] == pytest.approx(0.5) and factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.5) and factors[-1] == pytest.approx(1 / 90)  # linear decay to 0


def test_reinit_top_and_ema():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from reprozoo.families.text.tricks import EMA, patch_model

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # stand-in for pretrained weights
    before = {k: v.clone() for k, v in model.state_dict().items()}
    patch_model(model, [{"name": "reinit_top", "layers": 1}])
    after = model.state_dict()
    assert torch.equal(after["bert.encoder.layer.0.output.dense.weight"], before["bert.encoder.layer.0.output.dense.weight"])
    assert not torch.equal(after["bert.encoder.layer.1.output.dense.weight"], before["bert.encoder.layer.1.output.dense.weight"])
    assert torch.all(after["bert.encoder.layer.1.output.LayerNorm.bias"] == 0)
    assert not torch.equal(after["bert.pooler.dense.weight"], before["bert.pooler.dense.weight"])

    ema = EMA(model, momentum=0.5)
    w0 = model.classifier.weight.detach().clone()
    with torch.no_grad():
        model.classifier.weight.add_(2.0)
    ema.update(model)
    with ema.swapped(model):
        assert torch.allclose(model.classifier.weight, w0 + 1.0)
    assert torch.allclose(model.classifier.weight, w0 + 2.0)


@pytest.mark.parametrize("extra, key, message", [
    ("tricks: [no_bias_decay]", "tricks[0]", "changes nothing: optim.weight_decay is 0"),
    ("tricks: [reinit_top]", "tricks[0]", "has random weights already"),
    ("tricks: [{name: layer_decay, rate: 1.5}]", "tricks[0].rate", "must be in (0, 1)"),
    ("tricks: [mixup]", "tricks[0]", "not available for family 'text'"),
])
def test_tricks_that_cannot_apply_are_rejected(project, extra, key, message):
    from reprozoo.recipes import load_recipe

    f = write(project / "recipes/text/bad.yaml", TINY_TEXT.format(vocab="v.txt", epochs=1, extra=extra))
    with pytest.raises(ConfigError) as e:
        load_recipe(f)
    assert f"key '{key}'" in str(e.value) and message in str(e.value)


def test_label_smoothing_needs_classes(project):
    from reprozoo.recipes import load_recipe

    text = TINY_TEXT.format(vocab="v.txt", epochs=1, extra="tricks: [label_smoothing]").replace("glue_sst2", "glue_stsb")
    with pytest.raises(ConfigError, match="stsb is a regression task"):
        load_recipe(write(project / "recipes/text/bad.yaml", text))


def _fake_run(project, recipe, seed, metrics):
    d = project / "runs" / recipe / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    (d / "env.json").write_text(json.dumps({"device": "cpu", "packages": {"torch": "x"}, "determinism": {"threads": 1},
                                            "git_revision": "abc", "wall_seconds": 1.0, "peak_rss_mib": 1.0,
                                            "command": "reprozoo run", "started_utc": "2026-01-01T00:00:00+00:00"}))


def test_dev_runs_are_not_comparable_with_test_server_claims(project):
    from reprozoo.compare import compare
    from reprozoo.reports import markdown

    for seed, (acc, f1) in enumerate([(84.0, 88.7), (83.5, 88.2), (84.6, 89.1)]):
        _fake_run(project, "glue_mrpc_bert_base_cased", seed, {"dev": {"accuracy": acc, "f1": f1, "loss": 0.4}})
    result = compare("glue_bert_base_cased", seeds=[0, 1, 2])
    dev = result["claims"]["glue_mrpc_bert_base_cased:f1@dev"]
    assert dev["verdict"] in ("reproduced", "inconclusive") and dev["values"] == [88.7, 88.2, 89.1]
    test = [c for c in result["claims"].values() if c["recipe"] == "glue_mrpc_bert_base_cased" and c["split"] == "test"]
    assert len(test) == 1 and test[0]["verdict"] == "not comparable" and test[0]["values"] == []
    assert "split 'test' but the runs measure 'dev'" in test[0]["reason"]
    spread = result["spread"]["glue_mrpc_bert_base_cased"]["dev/accuracy"]
    assert spread["min"] == 83.5 and spread["max"] == 84.6 and spread["n"] == 3
    md = markdown(result)
    assert "**not comparable**: the claim is on split 'test'" in md and "## Seed spread" in md


def test_a_baseline_without_claims_reports_the_seed_spread(project):
    from reprozoo.compare import compare
    from reprozoo.reports import markdown, plot

    (project / "params.yaml").write_text("glue_tiny_seed_spread:\n  seeds: [0, 1]\n  recipes: [glue_rte_bert_tiny_random]\n")
    _fake_run(project, "glue_rte_bert_tiny_random", 0, {"dev": {"accuracy": 55.0, "loss": 0.7}})
    _fake_run(project, "glue_rte_bert_tiny_random", 1, {"dev": {"accuracy": 51.0, "loss": 0.7}})
    result = compare("glue_tiny_seed_spread")
    d = result["spread"]["glue_rte_bert_tiny_random"]["dev/accuracy"]
    assert d["values"] == [55.0, 51.0] and d["std"] == pytest.approx(math.sqrt(8)) and d["max"] - d["min"] == 4.0
    md = markdown(result)
    assert "makes no claim" in md and "| glue_rte_bert_tiny_random | dev/accuracy | 2 | 53.00 ± 2.83 | 51.00 | 55.00 | 4.00 |" in md
    assert plot(result)[:4] == b"\x89PNG"


def test_sanity_checks_pass_on_a_sound_recipe_and_catch_a_wrong_vocabulary(sst2_project, tmp_path):
    from reprozoo.checks import check
    from reprozoo.recipes import load_recipe

    results, _ = check(load_recipe("tiny_sst2"))
    by_name = {c.name: c for c in results}
    assert all(c.ok for c in results), [(c.name, c.summary) for c in results if not c.ok]
    assert sorted(by_name) == ["determinism", "input audit", "look at the data", "mode audit", "overfit one batch",
                               "padding invariance", "throughput", "trivial solution"]
    assert any(d.startswith("training classes: negative") for d in by_name["look at the data"].details)
    assert "attention mask covers" in by_name["input audit"].details[0]
    assert any(d.startswith(("`positive`", "`negative`")) and "[CLS]" in d for d in by_name["look at the data"].details)
    assert "dropout" in by_name["mode audit"].summary
    scan, profile = by_name["throughput"].details
    assert scan.startswith("batch-size scan (samples/s): 8: ") and "stops growing at batch" in scan
    assert profile.startswith("input pipeline profile (own time): ")
    md = (sst2_project / "reports/checks/tiny_sst2.md").read_text()
    assert "padding invariance" in md and (sst2_project / "reports/checks/tiny_sst2-samples.png").exists()
    # A vocabulary without the task's words: most tokens become [UNK], and the audit says so.
    write(tmp_path / "small_vocab.txt", "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]) + "\n")
    write(sst2_project / "recipes/text/tiny_sst2_unk.yaml",
          f"extends: tiny_sst2\nmodel: {{name: bert_random, vocab: {tmp_path / 'small_vocab.txt'}}}\n")
    audit = next(c for c in check(load_recipe("tiny_sst2_unk"))[0] if c.name == "input audit")
    assert not audit.ok and "[UNK]: wrong vocabulary or casing?" in audit.summary


def test_text_tricks_make_ablation_arms(project):
    from reprozoo.ablations import arm_texts, load_ablation
    from reprozoo.families.text.tricks import patch_recipe

    ab = load_ablation("rte_tiny_finetuning_tricks")
    for path, text in arm_texts(ab).items():
        write(path, text)
    arms = {a.name: ab.recipe(a) for a in ab.arms()}
    assert sorted(arms) == ["glue_rte_bert_tiny_random", "rte_tiny_finetuning_tricks+ema",
                            "rte_tiny_finetuning_tricks+label_smoothing", "rte_tiny_finetuning_tricks+layer_decay"]
    ls = patch_recipe(arms["rte_tiny_finetuning_tricks+label_smoothing"].config)
    assert ls["label_smoothing"] == 0.1 and patch_recipe(arms["glue_rte_bert_tiny_random"].config)["label_smoothing"] == 0.0
    assert arms["rte_tiny_finetuning_tricks+ema"].config["tricks"] == [{"name": "ema", "momentum": 0.01}]


def test_the_index_lists_a_claimless_baseline_as_a_seed_spread(project):
    from reprozoo.compare import compare
    from reprozoo.reports import report, write_index

    (project / "params.yaml").write_text("glue_tiny_seed_spread:\n  seeds: [0, 1]\n  recipes: [glue_rte_bert_tiny_random]\n")
    for seed, acc in enumerate([55.0, 51.0]):
        _fake_run(project, "glue_rte_bert_tiny_random", seed, {"dev": {"accuracy": acc}})
    compare("glue_tiny_seed_spread")
    report("glue_tiny_seed_spread")
    index = write_index().read_text()
    assert "| seed spread | [Seed spread of GLUE's small tasks" in index and "no claim: seed spread of glue_rte_bert_tiny_random" in index


def test_broken_setups_are_caught_by_the_checks(sst2_project, monkeypatch):
    """Shuffled labels defeat overfitting nothing, but a label-blind loss fails the trivial solution; a model
    stuck in eval mode fails the mode audit."""
    import torch

    from reprozoo.families.text import checks
    from reprozoo.recipes import load_recipe

    recipe = load_recipe("tiny_sst2")
    real = checks._trainer

    def label_blind(*a, **k):  # the loss ignores the labels: every example is trained towards class 0
        trainer, task, extra = real(*a, **k)
        forward = trainer.model.forward
        trainer.model.forward = lambda **kw: forward(**{**kw, "labels": torch.zeros_like(kw["labels"])} if "labels" in kw else kw)
        return trainer, task, extra

    monkeypatch.setattr(checks, "_trainer", label_blind)
    c = checks.trivial_solution(recipe, 0, sst2_project / "w")
    assert not c.ok and "wiring between labels and loss" in c.summary

    def never_train(*a, **k):
        trainer, task, extra = real(*a, **k)
        for m in trainer.model.modules():  # stuck in eval mode: train() and eval() do nothing
            m.training = False
        trainer.model.train = lambda mode=True: trainer.model
        trainer.model.eval = lambda: trainer.model
        return trainer, task, extra

    monkeypatch.setattr(checks, "_trainer", never_train)
    write(sst2_project / "recipes/text/tiny_sst2_dropout.yaml", "extends: tiny_sst2\nmodel: {name: bert_random, dropout: 0.1}\n")
    c = checks.mode_audit(load_recipe("tiny_sst2_dropout"), 0, sst2_project / "w")
    assert not c.ok and "is the model ever put in train mode?" in c.summary


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_non_finite_step_stops_the_run_naming_step_and_pass(sst2_project, where):
    import torch

    from reprozoo.errors import RunError
    from reprozoo.families.text.engine import build_trainer
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import RunContext

    recipe = load_recipe("tiny_sst2")  # 16 steps an epoch, checkpoints every 16
    work = sst2_project / "work"
    trainer, _, _ = build_trainer(recipe, 0, RunContext(recipe, 0, work, work / "dvclive", 1, progress=False))
    calls = {"n": 0}
    if where == "forward":
        def poison(module, args, out):
            calls["n"] += module.training
            return out * float("nan") if calls["n"] == 20 else out
        trainer.model.classifier.register_forward_hook(poison)
    else:
        def poison(grad):
            calls["n"] += 1
            return grad * float("inf") if calls["n"] == 20 else grad
        trainer.model.bert.embeddings.word_embeddings.weight.register_hook(poison)
    with pytest.raises(RunError) as e:
        trainer.train()
    msg = str(e.value)
    assert msg.startswith("step 20: non-finite values in the " + where + " pass")
    assert "checkpoint-16" in msg and (work / "checkpoint-16").is_dir()  # the last good checkpoint is kept
    if where == "forward":
        assert "in the logits" in msg
    else:
        assert "bert.embeddings.word_embeddings.weight" in msg
