"""Seed-batched training (`speed.seed_block`): blocks, bits, resume, the guard, and agreement with the
one-seed MMEngine engine."""
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import reprozoo, run_outputs, write

from reprozoo.errors import ConfigError, NonFiniteStep
from reprozoo.recipes import load_recipe
from reprozoo.runs import execute, run_dir

BLOCK = """\
extends: mnist1d_cnn
schedule: {{iters: {iters}}}
eval: {{interval: {interval}}}
checkpoint_interval: {interval}
{extra}"""


def _recipe(project, name="blk", iters=120, interval=40, extra=""):
    write(project / f"recipes/classification/{name}.yaml", BLOCK.format(iters=iters, interval=interval, extra=extra))
    return load_recipe(name)


def test_a_block_trains_all_its_seeds_once_and_each_stage_takes_its_own(project, monkeypatch):
    from reprozoo.families.classification import FAMILY

    r = _recipe(project, extra="tricks: [mixup, label_smoothing, {name: clip_grad, max_norm: 1.0}, {name: ema, momentum: 0.01}]\n")
    m2 = execute(r, 2, progress=False)
    assert sorted(p.name for p in (project / "runs/blk").iterdir()) == ["seed2"]  # only the asked seed's run dir
    calls = []
    with monkeypatch.context() as m:
        m.setattr(type(FAMILY), "train_block", lambda *a: calls.append(a))
        others = {s: execute(r, s, progress=False) for s in (0, 1, 3, 4)}  # taken from the block, not trained again
    assert calls == []
    accs = [others[0], others[1], m2, others[3], others[4]]
    assert len({a["test"]["accuracy"] for a in accs}) > 1  # five different networks
    env = json.loads((run_dir("blk", 4) / "env.json").read_text())
    assert env["seed_block"] == [0, 1, 2, 3, 4] and env["seed"] == 4 and env["block_wall_seconds"] > 0
    rows = (run_dir("blk", 4) / "dvclive/plots/metrics/accuracy.tsv").read_text().splitlines()
    assert rows[0] == "step\taccuracy" and [int(r.split("\t")[0]) for r in rows[1:]] == [40, 80, 120]
    assert float(rows[-1].split("\t")[1]) == others[4]["test"]["accuracy"]
    assert len((run_dir("blk", 4) / "dvclive/plots/metrics/grad_norm.tsv").read_text().splitlines()) == 121
    lr = (run_dir("blk", 4) / "dvclive/plots/metrics/lr.tsv").read_text().splitlines()
    assert lr[1:] == ["40\t0.01", "80\t0.01", "120\t0.01"]
    execute(r, 7, progress=False)  # a seed of the next block trains that block
    assert len(list((project / ".reprozoo/work/blk").glob("seeds5-9-*/seed9/result.json"))) == 1


def test_same_bits_whichever_seed_asks_and_after_a_kill(project):
    """A re-run gives the same bytes; so does a block trained because another seed asked; so does a
    block whose training was SIGKILLed after a checkpoint and resumed."""
    r = _recipe(project, iters=300, interval=100)
    execute(r, 0, progress=False)
    execute(r, 3, progress=False)
    first = {s: run_outputs("blk", s) for s in (0, 3)}
    execute(r, 3, force=True, progress=False)  # --force trains the block again, this time for seed 3
    execute(r, 0, progress=False)
    assert {s: run_outputs("blk", s) for s in (0, 3)} == first
    # kill a fresh training after its first checkpoint, then run again: it resumes there
    shutil.rmtree(project / ".reprozoo/work/blk")
    shutil.rmtree(project / "runs/blk")
    proc = subprocess.Popen([sys.executable, "-m", "reprozoo.cli", "run", "blk", "--seed", "3"], cwd=project,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((project / ".reprozoo/work/blk").glob("seeds0-4-*/block.pth")) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not run_dir("blk", 3).exists()
    out = reprozoo("run", "blk", "--seed", "3", cwd=project)
    env = json.loads((run_dir("blk", 3) / "env.json").read_text())
    assert env["resumed_from_iter"] in (100, 200), out.stderr
    reprozoo("run", "blk", "--seed", "0", cwd=project)
    assert {s: run_outputs("blk", s) for s in (0, 3)} == first


@pytest.mark.parametrize("extra", ["", "tricks: [mixup, label_smoothing, {name: clip_grad, max_norm: 1.0}]\n"])
def test_a_traced_step_trains_the_same_bits_as_the_eager_step(project, monkeypatch, extra):
    """The replayed trace and the eager step: the same metrics, curves and predictions, byte for byte, with
    the shared batch and with each seed's own mixed batch and soft targets."""
    from reprozoo.families.classification import batched

    traces, real = [], batched._traced
    monkeypatch.setattr(batched, "_traced", lambda *a: traces.append(a) or real(*a))
    r = _recipe(project, iters=90, interval=30, extra=extra)
    for seed in (0, 4):
        execute(r, seed, progress=False)
    assert len(traces) == 1  # traced once, at the block's first step
    traced = {s: run_outputs("blk", s, predictions=True) for s in (0, 4)}
    monkeypatch.setattr(batched, "TRACE", False)
    shutil.rmtree(project / ".reprozoo/work/blk")
    shutil.rmtree(project / "runs/blk")
    for seed in (0, 4):
        execute(r, seed, progress=False)
    assert len(traces) == 1
    assert {s: run_outputs("blk", s, predictions=True) for s in (0, 4)} == traced


def test_a_step_that_branches_on_a_value_is_not_traced():
    from torch.fx import GraphModule

    from reprozoo.families.classification.batched import _traced

    def plain(x):
        return x * 2

    def branching(x):
        return x * 2 if x.sum() > 0 else x * 3

    assert isinstance(_traced(plain, torch.ones(3)), GraphModule)
    step = _traced(branching, torch.ones(3))
    assert step is branching and step(-torch.ones(3)).tolist() == [-3.0, -3.0, -3.0]


def test_unrolled_gru_is_nn_gru():
    from reprozoo.families.classification.batched import UnrolledGRU, vmappable
    from reprozoo.families.classification.zoo.mnist1d import GRU

    torch.manual_seed(0)
    net = GRU()
    x = torch.randn(7, 40)
    ref = net(x)
    ref.sum().backward()
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    keys = list(net.state_dict())
    net.zero_grad()
    vmappable(net)
    assert isinstance(net.gru, UnrolledGRU) and list(net.state_dict()) == keys  # checkpoints move between the two
    out = net(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for k, p in net.named_parameters():
        torch.testing.assert_close(p.grad, grads[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model,shape", [("mnist1d_cnn", (40,)), ("mnist1d_gru", (40,)), ("lenet5", (1, 28, 28))])
@pytest.mark.parametrize("shared", [True, False])
def test_stacked_layers_under_vmap_equal_torch_layers(model, shape, shared):
    """Conv1dIm2col, GRURecurrence and Conv2dPerSeed (their vmap rules, forward and hand-written backward)
    give each seed of a stacked model what nn.Conv1d / nn.GRU / nn.Conv2d give its own network (float64, to
    rounding; LeNet-5's C3 is a masked convolution)."""
    from torch.func import functional_call, stack_module_state, vmap

    from reprozoo.families.classification.batched import Im2colConv1d, UnrolledGRU, vmappable
    from reprozoo.families.classification.models import MODELS

    torch.manual_seed(0)
    refs = [MODELS.build({"name": model}).double() for _ in range(3)]
    nets = [vmappable(MODELS.build({"name": model}).double()) for _ in range(3)]
    for ref, net in zip(refs, nets):
        net.load_state_dict(ref.state_dict())
    assert any(isinstance(m, (Im2colConv1d, UnrolledGRU)) or "_conv_forward" in vars(m) for m in nets[0].modules())
    params, buffers = stack_module_state(nets)
    for p in params.values():
        p.requires_grad_(True)
    base = nets[0].to("meta")
    x = torch.randn(7, *shape, dtype=torch.float64) if shared else torch.randn(3, 7, *shape, dtype=torch.float64)
    out = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)), in_dims=(0, 0, None if shared else 0))(params, buffers, x)
    out.pow(2).sum().backward()
    for j, ref in enumerate(refs):
        o = ref(x if shared else x[j])
        o.pow(2).sum().backward()
        torch.testing.assert_close(out[j], o, rtol=1e-12, atol=1e-12)
        for name, p in ref.named_parameters():
            torch.testing.assert_close(params[name].grad[j], p.grad, rtol=1e-10, atol=1e-12)


def test_lr_factor_is_mmengines_schedule():
    """The closed-form schedule equals MMEngine's LinearLR warmup + MultiStepLR / CosineAnnealingLR."""
    from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR, MultiStepLR

    from reprozoo.families.classification.batched import lr_factor

    for s in ({"iters": 50, "warmup_iters": 10, "warmup_factor": 0.1, "lr_schedule": "cosine", "milestones": [], "gamma": 0.1},
              {"iters": 50, "warmup_iters": 0, "warmup_factor": 0.1, "lr_schedule": "multistep", "milestones": [20, 40], "gamma": 0.2}):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheds = []
        if s["warmup_iters"]:
            scheds.append(LinearLR(opt, start_factor=s["warmup_factor"], by_epoch=False, begin=0, end=s["warmup_iters"]))
        if s["lr_schedule"] == "cosine":
            scheds.append(CosineAnnealingLR(opt, T_max=s["iters"] - s["warmup_iters"], eta_min=0.0, by_epoch=False,
                                            begin=s["warmup_iters"], end=s["iters"]))
        else:
            scheds.append(MultiStepLR(opt, milestones=s["milestones"], gamma=s["gamma"], by_epoch=False, begin=0, end=s["iters"]))
        theirs = []
        for _ in range(s["iters"]):
            theirs.append(opt.param_groups[0]["lr"])
            opt.step()  # no gradients: changes nothing, keeps torch from warning about the order
            for sch in scheds:
                sch.step()
        np.testing.assert_allclose([lr_factor(s, t) for t in range(s["iters"])], theirs, rtol=1e-9, atol=1e-12)


def test_a_non_finite_step_names_the_seed_and_stops_the_block(project):
    from reprozoo.families.classification.models import MODELS

    @MODELS.register("test_nan_for_seed_block")
    class NanLinear(torch.nn.Module):
        """A linear model whose weights hold a NaN when built for seed 1."""

        def __init__(self, num_classes: int = 10):
            super().__init__()
            self.lin = torch.nn.Linear(40, num_classes)
            if torch.initial_seed() == 1:
                with torch.no_grad():
                    self.lin.weight[0, 0] = float("nan")

        def forward(self, x):
            return self.lin(x)

    r = _recipe(project, name="nanblk", extra="model: {name: test_nan_for_seed_block}\n")
    with pytest.raises(NonFiniteStep, match=r"non-finite loss at step 1 for seed\(s\) \[1\] of block 0-4"):
        execute(r, 0, progress=False)
    assert not (project / "runs/nanblk").exists()


@pytest.mark.parametrize("extra, words", [
    ("tricks: [zero_init_residual]\n", ["zero_init_residual"]),  # the model check refuses it first
    ("speed: {amp: 'on'}\n", ["speed.seed_block", "amp: on needs the one-seed engine"]),
    ("speed: {seed_block: 0}\n", ["speed.seed_block", "must be in [1, 64]"]),
    ("model: {name: test_bn_model}\n", ["speed.seed_block", "BatchNorm1d", "seed_block: 1"]),
])
def test_recipes_the_block_engine_cannot_train_are_refused_when_loaded(project, extra, words):
    from reprozoo.families.classification.models import MODELS

    if "test_bn_model" not in MODELS.names():
        @MODELS.register("test_bn_model")
        class BN(torch.nn.Module):
            def __init__(self, num_classes: int = 10):
                super().__init__()
                self.bn, self.lin = torch.nn.BatchNorm1d(40), torch.nn.Linear(40, num_classes)

            def forward(self, x):
                return self.lin(self.bn(x))

    with pytest.raises(ConfigError) as e:
        _recipe(project, name="refused", extra=extra)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_batched_and_one_seed_training_agree_over_five_seeds(project):
    """Both engines start every seed from the same weights and feed the same batches; over 5 seeds their
    accuracies differ by at most 1 point and are equivalent within 1 point (paired TOST, alpha 0.05).
    The full-length comparison is `benchmarks/seed_batching.py`."""
    from statsmodels.stats.weightstats import ttost_paired

    r = _recipe(project, name="agree", iters=300, interval=150)
    write(project / "recipes/classification/agree_one.yaml", "extends: agree\nspeed: {seed_block: 1}\n")
    one = load_recipe("agree_one")
    batched = np.array([execute(r, s, progress=False)["test"]["accuracy"] for s in range(5)])
    single = np.array([execute(one, s, progress=False)["test"]["accuracy"] for s in range(5)])
    d = batched - single
    assert np.abs(d).max() <= 1.0 and batched.std() > 0.3, (batched, single)  # seeds differ; engines hardly
    if d.std() > 0:  # identical accuracies (seen at 300 steps: same weights, same batches) need no test
        assert ttost_paired(batched, single, -1.0, 1.0)[0] < 0.05, (batched, single)
