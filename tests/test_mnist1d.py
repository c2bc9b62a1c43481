import numpy as np
import torch

from reprozoo.datasets_store import prepare
from reprozoo.families.classification.datasets import DATASETS
from reprozoo.families.classification.models import MODELS, count_parameters


def test_prepared_mnist1d_is_the_papers_default_split(project):
    d = prepare("classification", "mnist1d")
    train, test = DATASETS.get("mnist1d")().load(d, "train"), DATASETS.get("mnist1d")().load(d, "test")
    assert train.x.shape == (4000, 40) and test.x.shape == (1000, 40) and train.x.dtype == torch.float32
    assert sorted(torch.unique(train.y).tolist()) == list(range(10))
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())  # generated offline with seed 42, as upstream
    assert np.array_equal(train.x.numpy(), ref["x"].astype(np.float32))
    assert np.array_equal(test.y.numpy(), ref["y_test"])
    # preparing again gives the same bytes, so DVC sees the same dataset
    files = {f.name: f.read_bytes() for f in d.iterdir()}
    assert {f.name: f.read_bytes() for f in prepare("classification", "mnist1d", force=True).iterdir()} == files
    batch = train[list(range(100, 200))]  # one gather per batch, upstream's x[bix:bix+100]
    assert torch.equal(batch["inputs"], train.x[100:200]) and torch.equal(batch["labels"], train.y[100:200])


def test_shuffled_variant_permutes_time_only(project):
    a = DATASETS.get("mnist1d")().load(prepare("classification", "mnist1d"), "test")
    b = DATASETS.get("mnist1d_shuffled")().load(prepare("classification", "mnist1d_shuffled"), "test")
    assert torch.equal(a.y, b.y) and not torch.equal(a.x, b.x)
    assert torch.allclose(a.x.sort(dim=1).values, b.x.sort(dim=1).values, atol=1e-5)


def test_models_match_upstream_shapes():
    sizes = {"mnist1d_linear": 40 * 10 + 10,
             "mnist1d_mlp": (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10),
             "mnist1d_cnn": (5 * 25 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10),
             "mnist1d_gru": 2 * (3 * 6 * (1 + 6) + 2 * 3 * 6) + (2 * 6 * 40 * 10 + 10)}
    x = torch.randn(7, 40)
    for name, n in sizes.items():
        m = MODELS.build({"name": name})
        assert count_parameters(m) == n, name
        assert m(x).shape == (7, 10)
