"""MNIST from tiny idx files in the official format, and LeNet-5 as the paper describes it."""
import gzip
import hashlib
import shutil

import numpy as np
import pytest
import torch
from conftest import run_outputs, write

from reprozoo.datasets_store import DataError, prepare
from reprozoo.families.classification.datasets import DATASETS
from reprozoo.families.classification.models import MODELS
from reprozoo.families.classification.zoo import mnist


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _store(tmp_path, monkeypatch, n_train=30, n_test=12):
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (n_train, 28, 28)), "train_labels": rng.integers(0, 10, n_train),
              "test_images": rng.integers(0, 256, (n_test, 28, 28)), "test_labels": rng.integers(0, 10, n_test)}
    files = {}
    for key, arr in arrays.items():
        name = mnist.FILES[key][0]
        raw = _idx(arr)
        (tmp_path / "store/mnist").mkdir(parents=True, exist_ok=True)
        (tmp_path / "store/mnist" / name).write_bytes(gzip.compress(raw))
        files[key] = (name, hashlib.md5(raw).hexdigest())
    monkeypatch.setenv("REPROZOO_DATA", str(tmp_path / "store"))
    monkeypatch.setattr(mnist.MNIST, "files", files)
    return arrays


def test_mnist_from_idx_files(project, monkeypatch, tmp_path):
    arrays = _store(tmp_path, monkeypatch)
    d = prepare("classification", "mnist")
    ds = DATASETS.build({"name": "mnist"})
    train, test = ds.load(d, "train"), ds.load(d, "test")
    assert train.x.shape == (30, 1, 28, 28) and train.x.dtype == torch.uint8 and test.y.tolist() == arrays["test_labels"].tolist()
    assert np.array_equal(train.x[:, 0].numpy(), arrays["train_images"])
    assert not train.augment  # the paper's 0.95% is without distortions
    assert ds.normalize == ([20.0], [200.0])  # 0 -> -0.1 and 255 -> 1.175, as sec. II.A
    # a corrupt file is caught on its content, whatever its compression
    monkeypatch.setattr(mnist.MNIST, "files", {**mnist.MNIST.files, "test_labels": (mnist.FILES["test_labels"][0], "0" * 32)})
    with pytest.raises(DataError, match=r"store/mnist/t10k-labels-idx1-ubyte.gz: uncompressed md5 \w+ is not the official 0{32}"):
        prepare("classification", "mnist", force=True)  # named as the user's file, not its copy in the staging folder
    with pytest.raises(ValueError, match="idx"):
        mnist.read_idx(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")


def test_lenet5_matches_the_paper():
    torch.manual_seed(0)
    net = MODELS.build({"name": "lenet5"})
    # sec. II.B: C1 156, S2 12, C3 1516 (Table I connections), S4 32, C5 48120, F6 10164 trainable parameters
    c3 = int(net.c3.mask.sum()) * 25 + 16
    sizes = {"c1": 156, "s2": 12, "s4": 32, "c5": 48120, "f6": 10164}
    for name, n in sizes.items():
        assert sum(p.numel() for p in getattr(net, name).parameters()) == n, name
    assert c3 == 1516
    assert [tuple(int(i) for i in net.c3.mask[j, :, 0, 0].nonzero().flatten()) for j in range(16)] == mnist.C3_TABLE
    x = torch.zeros(5, 1, 28, 28)
    assert net(x).shape == (5, 10)
    bound = 2.4 / 25  # Appendix B: uniform in +-2.4 / fan-in
    assert float(net.c1.weight.abs().max()) <= bound and float(net.c1.weight.abs().max()) > 0.9 * bound
    # unconnected C3 weights never matter, connected ones do
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        out = net(x)
        net.c3.weight[0, 5] += 100.0  # C3 map 0 does not see S2 map 5
        assert torch.equal(net(x), out)
        net.c3.weight[0, 0] += 1.0  # but it sees map 0
        assert not torch.allclose(net(x), out)


def test_lenet5_recipe_trains_on_idx_data(project, monkeypatch, tmp_path):
    from conftest import short_run

    _store(tmp_path, monkeypatch)
    m = short_run(project, "lenet5_mnist", iters=20, batch=10, eval_batch=6)
    assert 0 <= m["test"]["accuracy"] <= 100


def test_a_lenet5_seed_block_gives_the_same_bits_traced_eager_and_resumed(project, monkeypatch, tmp_path):
    """LeNet-5's seed block (one convolution per seed, each seed its own shuffled batches, batches straddling
    passes): the traced and the eager step write the same bytes, and so does a block stopped after a
    checkpoint and resumed; the seeds' orders differ."""
    from reprozoo.families.classification import batched
    from reprozoo.recipes import load_recipe
    from reprozoo.runs import execute

    _store(tmp_path, monkeypatch)  # 30 training images: batches of 8 straddle each pass
    write(project / "recipes/classification/lb.yaml", "extends: lenet5_mnist\nschedule: {iters: 12, batch_size: 8, "
          "milestones: [6]}\neval: {interval: 4, batch_size: 5}\ncheckpoint_interval: 4\n")
    r = load_recipe("lb")

    def outputs():
        return {seed: run_outputs("lb", seed, predictions=True) for seed in (0, 4)}

    def fresh():
        for d in (project / ".reprozoo/work/lb", project / "runs/lb"):
            shutil.rmtree(d, ignore_errors=True)

    for seed in (0, 4):
        execute(r, seed, progress=False)
    traced = outputs()
    assert traced[0]["grad_norm.tsv"] != traced[4]["grad_norm.tsv"]
    assert len(traced[0]["grad_norm.tsv"].splitlines()) == 13  # header and one row per step
    fresh()
    monkeypatch.setattr(batched, "TRACE", False)
    for seed in (0, 4):
        execute(r, seed, progress=False)
    assert outputs() == traced
    # stop the block at step 7, after its checkpoint at step 4; the next run resumes there
    fresh()
    monkeypatch.setattr(batched, "TRACE", True)
    calls, norms = [], batched._grad_norms

    def stop_at_7(grads):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("stopped")
        return norms(grads)
    monkeypatch.setattr(batched, "_grad_norms", stop_at_7)
    with pytest.raises(RuntimeError, match="stopped"):
        execute(r, 0, progress=False)
    assert list((project / ".reprozoo/work/lb").glob("seeds0-4-*/block.pth"))
    for seed in (0, 4):
        execute(r, seed, progress=False)
    assert len(calls) == 7 + 8  # steps 5-12 again
    assert outputs() == traced
