"""`reprozoo check`: each check passes a healthy setup and catches the broken one it is for."""
import numpy as np
import torch
from torch import nn

from reprozoo.checks import check
from reprozoo.families.classification.datasets import DATASETS, ArrayDataset
from reprozoo.families.classification.models import MODELS
from reprozoo.recipes import load_recipe

from conftest import write


@MODELS.register("test_frozen_mlp")
class FrozenMLP(nn.Module):
    """Test model: an MLP whose parameters never train."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, num_classes))
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.net(x)


@MODELS.register("test_noisy_mlp")
class NoisyMLP(nn.Module):
    """Test model: adds noise from an unseeded generator (a nondeterministic op), and ignores eval()."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, num_classes))
        self.gen = torch.Generator().manual_seed(int.from_bytes(np.random.SeedSequence().entropy.to_bytes(16, "little")[:4], "little"))

    def train(self, mode: bool = True):  # a broken override: the dropout never leaves training mode
        return self

    def forward(self, x):
        return self.net(x + 0.01 * torch.randn(x.shape, generator=self.gen))


@DATASETS.register("test_raw_pixels", modality="sequence")
class RawPixels:
    """Test dataset: MNIST-1D-like sequences scaled to 0-255 and labels up to 10 (one too many)."""

    num_classes = 10

    def prepare(self, out_dir):
        (out_dir / "ok").write_text("1")

    def load(self, data_dir, split):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 10, 400)
        y[:50] = 10
        return ArrayDataset(rng.integers(0, 256, (400, 40)).astype(np.float32), y)


@DATASETS.register("test_shuffled_labels", modality="sequence")
class ShuffledLabels(DATASETS.get("mnist1d")):
    """Test dataset: MNIST-1D whose training labels are shuffled, so they no longer belong to their inputs."""

    def load(self, data_dir, split):
        d = super().load(data_dir, split)
        if split == "train":
            d.y = d.y[torch.randperm(len(d.y), generator=torch.Generator().manual_seed(0))]
        return d


def _check(project, name, body):
    # the sanity checks train one seed on MMEngine; the Dropout model needs that engine (seed_block: 1)
    write(project / f"recipes/classification/{name}.yaml", "extends: mnist1d_mlp\nspeed: {seed_block: 1}\n" + body)
    results, _ = check(load_recipe(name), 0)
    return {c.name: c for c in results}


def test_healthy_recipe_passes_every_check(project):
    res = _check(project, "healthy", "")
    assert all(c.ok for c in res.values()), {k: c.summary for k, c in res.items() if not c.ok}
    md = (project / "reports/checks/healthy.md").read_text()
    assert "8/8 passed" in md and "| overfit one batch | pass |" in md
    assert "better than chance" not in res["held-out signal"].summary and "commonest class" in res["held-out signal"].summary
    assert (project / "reports/checks/healthy-samples.png").read_bytes()[:4] == b"\x89PNG"
    assert "samples/s" in res["throughput"].details[0] and "batch-size scan" in res["throughput"].details[1]
    assert res["throughput"].details[2].startswith("input pipeline profile (own time): ") and " calls" in res["throughput"].details[2]


def test_frozen_model_fails_the_overfit_check(project):
    res = _check(project, "frozen", "model: {name: test_frozen_mlp}\n")
    assert not res["overfit one batch"].ok and "frozen" in res["overfit one batch"].summary
    assert not res["trivial solution"].ok


def test_shuffled_labels_fail_the_held_out_check_only(project):
    res = _check(project, "shuffled", "dataset: {name: test_shuffled_labels}\n")
    assert not res["held-out signal"].ok and "shuffled or misaligned" in res["held-out signal"].summary
    assert res["overfit one batch"].ok and res["trivial solution"].ok  # memorising and wiring still work


def test_unnormalised_inputs_and_bad_labels_fail_the_audit(project):
    res = _check(project, "raw", "dataset: {name: test_raw_pixels}\n")
    audit = res["input audit"]
    assert not audit.ok and "not normalised" in audit.summary and "labels outside [0, 9]" in audit.summary


def test_nondeterminism_and_a_broken_train_mode_are_caught(project):
    res = _check(project, "noisy", "model: {name: test_noisy_mlp}\n")
    assert not res["determinism"].ok and "differ" in res["determinism"].summary
    assert not res["mode audit"].ok


def test_cli_exit_status(project):
    from conftest import reprozoo

    write(project / "recipes/classification/frozen.yaml", "extends: mnist1d_mlp\nmodel: {name: test_frozen_mlp}\n")
    out = reprozoo("check", "mnist1d_logreg", cwd=project)
    assert out.returncode == 0 and "pass  overfit one batch" in out.stdout
