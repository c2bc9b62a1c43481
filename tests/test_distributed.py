"""`devices: N`: one run as N DDP processes under torchrun (gloo on this CPU), rank 0 writing the run."""
import json

import pytest
from conftest import reprozoo, write

from reprozoo.errors import ConfigError
from reprozoo.recipes import load_recipe

RECIPE = """\
extends: mnist1d_cnn
schedule: {iters: 60}
eval: {interval: 30}
checkpoint_interval: 30
speed: {seed_block: 1}
"""


def test_two_processes_train_one_run_like_one_process(project):
    """Each rank takes every other sample of the one stream and DDP averages the gradients, so two
    processes see what one process sees per step: the same accuracy to rounding; one run directory."""
    write(project / "recipes/classification/one_dev.yaml", RECIPE)
    write(project / "recipes/classification/two_dev.yaml", RECIPE + "devices: 2\n")
    assert load_recipe("one_dev").hash != load_recipe("two_dev").hash  # world size changes numbers: in the hash
    one = reprozoo("run", "one_dev", "--seed", "0", "--no-progress", cwd=project)
    two = reprozoo("run", "two_dev", "--seed", "0", "--no-progress", cwd=project, check=False, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    runs = project / "runs"
    m1 = json.loads((runs / "one_dev/seed0/metrics.json").read_text())["test"]["accuracy"]
    m2 = json.loads((runs / "two_dev/seed0/metrics.json").read_text())["test"]["accuracy"]
    assert abs(m1 - m2) <= 0.5 and 15 < m2 < 100, (m1, m2, one.stdout)
    env = json.loads((runs / "two_dev/seed0/env.json").read_text())
    assert env["distributed"] == {"world_size": 2, "batch_per_device": 50, "effective_batch": 100, "lr_scale": 1.0,
                                  "backend": "gloo"}
    assert "distributed" not in json.loads((runs / "one_dev/seed0/env.json").read_text())
    acc = (runs / "two_dev/seed0/dvclive/plots/metrics/accuracy.tsv").read_text().splitlines()
    assert [r.split("\t")[0] for r in acc[1:]] == ["30", "60"]  # one writer: rank 0's curves, each step once
    assert sorted(p.name for p in (runs / "two_dev").iterdir()) == ["seed0"]
    assert not [p for p in (project / ".reprozoo/work/two_dev").iterdir() if p.is_dir()]  # no checkpoints or rank scratch left
    again = reprozoo("run", "two_dev", "--seed", "0", cwd=project)  # done: no second training
    assert "already done" in again.stderr


@pytest.mark.parametrize("extra, words", [
    ("devices: 3\n", ["devices", "does not divide schedule.batch_size 100"]),
    ("devices: 2\nspeed: {seed_block: 5}\n", ["devices", "seed_block: 1"]),
    ("devices: 0\n", ["devices", "must be in [1, 1024]"]),
])
def test_recipes_ddp_cannot_train_are_refused(project, extra, words):
    write(project / "recipes/classification/bad_dev.yaml", RECIPE.replace("speed: {seed_block: 1}\n", "") + extra
          if "seed_block" in extra else RECIPE + extra)
    with pytest.raises(ConfigError) as e:
        load_recipe("bad_dev")
    assert all(w in str(e.value) for w in words), str(e.value)


def test_devices_one_leaves_the_recipe_hash_alone(project):
    write(project / "recipes/classification/explicit_one.yaml", "extends: mnist1d_cnn\ndevices: 1\n")
    assert load_recipe("explicit_one").hash == load_recipe("mnist1d_cnn").hash


def test_text_run_on_two_processes_under_the_hf_trainer(project, tmp_path, monkeypatch):
    """The text family's `devices: 2`: the HF Trainer reads torchrun's environment, each rank takes half of
    the batch, rank 0 writes the one run directory; a learnable tiny SST-2 is still learned."""
    from test_text import TINY_TEXT, _sst2_like

    store = tmp_path / "store"
    _sst2_like(store)
    monkeypatch.setenv("REPROZOO_DATA", str(store))
    write(project / "recipes/text/tiny_sst2_ddp.yaml", TINY_TEXT.format(vocab=store / "vocab.txt", epochs=6, extra="devices: 2"))
    run = reprozoo("run", "tiny_sst2_ddp", "--seed", "0", "--no-progress", cwd=project, check=False, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = project / "runs/tiny_sst2_ddp"
    assert sorted(p.name for p in out.iterdir()) == ["seed0"]
    env = json.loads((out / "seed0/env.json").read_text())
    assert env["distributed"] == {"world_size": 2, "batch_per_device": 8, "effective_batch": 16, "lr_scale": 1.0,
                                  "backend": "gloo"}
    assert json.loads((out / "seed0/metrics.json").read_text())["dev"]["accuracy"] > 85  # chance is 50
    preds = (out / "seed0/predictions.csv").read_text().splitlines()
    assert len(preds) == 1 + 64  # every dev sentence once, not once per rank
