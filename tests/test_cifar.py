"""CIFAR data (tiny archives in the official pickled-batch format), the CIFAR ResNets, and published-checkpoint checks."""
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from reprozoo.checkpoints import binomial_verdict, check_checkpoint
from reprozoo.datasets_store import prepare
from reprozoo.errors import ConfigError
from reprozoo.families.classification.datasets import DATASETS, crop_flip
from reprozoo.families.classification.models import MODELS, count_parameters
from reprozoo.families.classification.zoo import cifar
from reprozoo.fetch import md5sum
from reprozoo.recipes import load_recipe

from conftest import short_run, write



def _cifar_archive(path: Path, n_train=20, n_test=10, seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train + n_test, 3072), dtype=np.uint8)
    y = rng.integers(0, 10, n_train + n_test).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        per = n_train // 5
        batches = {f"data_batch_{i + 1}": (x[i * per:(i + 1) * per], y[i * per:(i + 1) * per]) for i in range(5)}
        batches["test_batch"] = (x[n_train:], y[n_train:])
        for name, (bx, by) in batches.items():
            blob = pickle.dumps({b"data": bx, b"labels": by, b"batch_label": name.encode()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return x, np.array(y)


def test_cifar10_prepared_from_the_official_archive_format(project, monkeypatch, tmp_path):
    data = tmp_path / "store"
    x, y = _cifar_archive(data / "cifar10/cifar-10-python.tar.gz")
    monkeypatch.setenv("REPROZOO_DATA", str(data))
    archive = data / "cifar10/cifar-10-python.tar.gz"
    monkeypatch.setattr(cifar.CIFAR10, "archive", ("cifar-10-python.tar.gz", md5sum(archive), None))
    d = prepare("classification", "cifar10")
    ds = DATASETS.build({"name": "cifar10"})
    train, test = ds.load(d, "train"), ds.load(d, "test")
    assert train.x.shape == (20, 3, 32, 32) and train.x.dtype == torch.uint8 and test.x.shape == (10, 3, 32, 32)
    assert np.array_equal(train.x.numpy(), x[:20].reshape(-1, 3, 32, 32)) and np.array_equal(test.y.numpy(), y[20:])
    assert sorted(p.name for p in d.iterdir()) == ["x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]
    assert train.augment and not test.augment
    monkeypatch.setattr(cifar.CIFAR10, "archive", ("cifar-10-python.tar.gz", "0" * 32, None))
    with pytest.raises(Exception, match="md5"):
        prepare("classification", "cifar10", force=True)


def test_crop_flip_is_a_padded_crop_or_its_mirror():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = crop_flip(x, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    flips = 0
    for img, src in zip(out, padded):
        crops = [src[:, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        plain = any(torch.equal(img, c) for c in crops)
        mirrored = any(torch.equal(img, c.flip(-1)) for c in crops)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 16 < flips < 48


def test_cifar_resnets_have_the_papers_sizes():
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M parameters
    sizes = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}
    for depth, millions in sizes.items():
        net = MODELS.build({"name": "resnet_cifar_he2016", "depth": depth})
        assert round(count_parameters(net) / 1e6, 2 if depth < 110 else 1) == millions, depth
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert 11.1e6 < count_parameters(MODELS.build({"name": "resnet18_devries2017"})) < 11.2e6
    net = MODELS.build({"name": "resnet_cifar_he2016", "depth": 20})
    net.zero_init_residual()
    assert all(float(b.bn2.weight.abs().sum()) == 0 for b in net.modules() if isinstance(b, cifar.BasicBlock))


def test_mmpretrain_cifar_resnets_match_the_zoo():
    """MMPretrain configs/resnet/README.md parameter counts, its checkpoints' key layout and its initialisation."""
    zoo = {(18, 10): 11.17, (34, 10): 21.28, (50, 10): 23.52, (101, 10): 42.51, (152, 10): 58.16, (50, 100): 23.71}
    for (depth, classes), millions in zoo.items():
        net = MODELS.build({"name": "resnet_cifar_mmpretrain", "depth": depth, "num_classes": classes})
        assert round(count_parameters(net) / 1e6, 2) == millions, depth
    torch.manual_seed(0)
    net = MODELS.build({"name": "resnet_cifar_mmpretrain", "depth": 50, "num_classes": 100})
    keys = set(net.state_dict())
    assert {"backbone.conv1.weight", "backbone.bn1.running_var", "backbone.layer1.0.conv3.weight",
            "backbone.layer1.0.downsample.0.weight", "backbone.layer4.2.bn3.weight", "head.fc.weight"} <= keys
    assert all(k.startswith(("backbone.", "head.fc.")) for k in keys)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert all(float(b.bn3.weight.abs().sum()) == 0 for b in net.modules() if isinstance(b, cifar._Bottleneck))
    assert float(net.head.fc.weight.std()) == pytest.approx(0.01, rel=0.05)
    plain = MODELS.build({"name": "resnet_cifar_mmpretrain", "depth": 18, "init": "pytorch"})
    assert all(float(b.bn2.weight.min()) == 1 for b in plain.modules() if isinstance(b, cifar._Basic))
    with pytest.raises(ValueError, match=r"depth must be one of \[18, 34, 50, 101, 152\], got 20"):
        MODELS.build({"name": "resnet_cifar_mmpretrain", "depth": 20})


def test_binomial_verdict_rule():
    r = binomial_verdict(932, 1017, 91.73, tolerance=0.005, margin=1.0)
    assert r["accuracy"] == pytest.approx(91.642, abs=1e-3) and r["ci_low"] < 91.73 < r["ci_high"]
    assert r["verdict"] == "inconclusive" and r["published_inside_ci"]  # 1017 images cannot pin it to ±1 point
    assert binomial_verdict(9170, 10000, 91.73, tolerance=0.005, margin=1.0)["verdict"] == "reproduced"
    assert binomial_verdict(800, 1017, 91.73, tolerance=0.005, margin=1.0)["verdict"] == "below"
    assert binomial_verdict(1010, 1017, 91.73, tolerance=0.005, margin=1.0)["verdict"] == "above"


def _subset_store(tmp_path, monkeypatch) -> Path:
    """A fake `cifar10/exact_subset.npz` (same keys and layout as the real one) in a data store."""
    rng = np.random.default_rng(1)
    npz = tmp_path / "store/cifar10/exact_subset.npz"
    npz.parent.mkdir(parents=True)
    np.savez(npz, x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 8),
             x_test=rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 50))
    monkeypatch.setenv("REPROZOO_DATA", str(tmp_path / "store"))
    monkeypatch.setattr(cifar.CIFAR10Subset, "archive", ("exact_subset.npz", md5sum(npz), None))
    return npz


def test_image_tricks_train_on_cifar_images(project, monkeypatch, tmp_path):
    _subset_store(tmp_path, monkeypatch)
    m = short_run(project, "cifar10_resnet20_akamaster", iters=4, batch=4, eval_batch=25,
                  extra="tricks: [trivialaugment, cutmix, random_erasing, hflip_tta, zero_init_residual, label_smoothing]\n")
    assert 0 <= m["test"]["accuracy"] <= 100


def test_checkpoint_check_through_the_recipes_test_pipeline(project, monkeypatch, tmp_path):
    npz = _subset_store(tmp_path, monkeypatch)
    torch.manual_seed(0)
    net = MODELS.build({"name": "resnet_cifar_he2016", "depth": 20})
    ckpt = tmp_path / "resnet20-test.th"  # the akamaster layout: DataParallel prefixes, no num_batches_tracked
    torch.save({"best_prec1": 0.0, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()
                                                   if not k.endswith("num_batches_tracked")}}, ckpt)
    r = check_checkpoint(load_recipe("cifar10_resnet20_akamaster"), ckpt, published=91.73, source="test")
    z = np.load(npz)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in cifar.NORMALIZE["imagenet"])
    x = (torch.as_tensor(z["x_test"]).permute(0, 3, 1, 2).float() - mean) / std
    with torch.no_grad():
        expected = int((net.eval()(x).argmax(1) == torch.as_tensor(z["y_test"])).sum())
    assert (r["correct"], r["total"]) == (expected, 50)
    md = (project / "reports/checks/cifar10_resnet20_akamaster--resnet20-test.md").read_text()
    assert "| 50 (test split) |" in md and "**below**" in md  # a random network is far below 91.73
    assert "checks/cifar10_resnet20_akamaster--resnet20-test.md" in (project / "reports/README.md").read_text()
    bad = tmp_path / "bad.th"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ConfigError, match="bad.th.*does not fit the model CifarResNet"):
        check_checkpoint(load_recipe("cifar10_resnet20_akamaster"), bad, published=91.73, source="test")



@pytest.mark.parametrize("text,key,words", [
    ("extends: cifar10_resnet20_akamaster\nmodel: {depth: 21}\n", "model", ["depth must be 6n+2", "got 21"]),
    ("extends: cifar10_resnet20_akamaster\ndataset: {normalize: mnist}\n", "dataset", ["normalize must be one of", "imagenet"]),
    ("extends: cifar10_resnet20_akamaster\ntricks: [zero_init_residual, trivialaugment]\n", None, None),
])
def test_cifar_recipe_errors(project, text, key, words):
    write(project / "recipes/classification/bad.yaml", text)
    if key is None:  # images take the image tricks and the ResNet takes zero-init
        assert [t["name"] for t in load_recipe("bad").config["tricks"]] == ["zero_init_residual", "trivialaugment"]
        return
    with pytest.raises(ConfigError) as e:
        load_recipe("bad")
    assert "bad.yaml" in str(e.value) and f"'{key}'" in str(e.value) and all(w in str(e.value) for w in words)


def test_the_data_grid_names_cifar_classes(project, monkeypatch, tmp_path):
    from reprozoo.families.classification.checks import look_at_data

    _subset_store(tmp_path, monkeypatch)
    c = look_at_data(load_recipe("cifar10_resnet20_subset"), 0, tmp_path / "work", tmp_path / "grid.png")
    assert (tmp_path / "grid.png").exists() and c.details[1].startswith("class counts: airplane ")
