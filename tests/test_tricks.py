"""Each trick: its patch on the resolved config, and what it really does in a short real run."""
import math

import pytest
import torch
from mmengine.hooks import Hook
from torch import nn

from reprozoo.errors import ConfigError
from reprozoo.families.classification import tricks as ct
from reprozoo.families.classification.engine import build_runner, runner_config
from reprozoo.families.classification.models import MODELS
from reprozoo.recipes import load_recipe
from reprozoo.runs import RunContext
from reprozoo.tricks import TRICKS, label

from conftest import REPO, write
from reprozoo.families import family_names, get_family

BASE = "recipes/classification"


@MODELS.register("test_resnet")
class TinyResNet(nn.Module):
    """Test model: one residual block ending in a BatchNorm."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.inp = nn.Linear(40, 16)
        self.block = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16))
        self.out = nn.Linear(16, num_classes)

    def zero_init_residual(self):
        nn.init.zeros_(self.block[3].weight)

    def forward(self, x):
        h = self.inp(x).relu()
        return self.out((h + self.block(h)).relu())


def recipe(project, tricks: str, extra: str = "", name: str = "tricked", iters: int = 60):
    schedule = "" if "schedule:" in extra else f"schedule: {{iters: {iters}}}\n"  # a key written twice is an error
    write(project / BASE / f"{name}.yaml", f"extends: mnist1d_mlp\n{schedule}"
                                            f"eval: {{interval: 30}}\ncheckpoint_interval: 30\ntricks: {tricks}\n{extra}"
                                            + ("" if "speed:" in extra else "speed: {seed_block: 1}\n"))  # the MMEngine engine
    return load_recipe(name)


def ctx(project, r, seed=0):
    work = project / ".reprozoo/work" / r.name / f"seed{seed}"
    return RunContext(r, seed, work, work / "dvclive", threads=1, progress=False)


def test_every_trick_is_declared_with_a_source_and_implemented():
    assert len(TRICKS.names()) >= 14
    for name in TRICKS.names():
        info = TRICKS.info(name)
        assert info["source"] and info["doc"] and any(name in get_family(f).tricks for f in family_names()), name
    for family in family_names():  # each family's trick module handles every trick the family declares
        text = (REPO / "src/reprozoo/families" / family / "tricks.py").read_text()
        assert get_family(family).tricks <= set(TRICKS.names()), family
        for name in get_family(family).tricks:
            assert f'"{name}"' in text, (family, name)
    assert label({"name": "ema", "momentum": 0.0002}) == "ema"
    assert label({"name": "ema", "momentum": 0.001}) == "ema(momentum=0.001)"


def test_patches_on_the_resolved_config(project):
    r = recipe(project, "[cosine, {name: warmup, fraction: 0.1}, label_smoothing, {name: ema, momentum: 0.01}, "
                        "{name: clip_grad, max_norm: 2.0}, mixup, cutmix, random_erasing, hflip_tta, longer_schedule]")
    cfg = runner_config(r, 0, ctx(project, r))
    assert cfg["train_cfg"]["max_iters"] == 120  # longer_schedule doubles 60
    assert [(s["type"], s["begin"], s["end"]) for s in cfg["param_scheduler"]] == [("LinearLR", 0, 12), ("CosineAnnealingLR", 12, 120)]
    assert cfg["param_scheduler"][0]["start_factor"] == 0.1
    assert {"type": "EMAHook", "momentum": 0.01, "update_buffers": True, "priority": "ABOVE_NORMAL"} in cfg["custom_hooks"]
    assert cfg["optim_wrapper"]["clip_grad"] == {"max_norm": 2.0}
    m = cfg["model"]
    assert (m["label_smoothing"], m["mixup_alpha"], m["cutmix_alpha"], m["tta_flip"]) == (0.1, 0.2, 1.0, True)
    assert m["erasing"] == {"p": 0.5, "min_area": 0.02, "max_area": 0.33, "value": 0.0}
    plain = runner_config(load_recipe("mnist1d_mlp"), 0, ctx(project, load_recipe("mnist1d_mlp")))
    assert plain["param_scheduler"] is None and len(plain["custom_hooks"]) == 3 and "clip_grad" not in plain["optim_wrapper"]


@pytest.mark.parametrize("tricks,extra,key,words", [
    ("[warp_drive]", "", "tricks[0].name", ["unknown trick 'warp_drive'", "cosine", "mixup"]),
    ("[cosine, cosine]", "", "tricks[1]", ["listed twice"]),
    ("[{name: ema, decay: 0.9}]", "", "tricks[0].decay", ["unknown parameter of trick 'ema'", "momentum"]),
    ("[{name: ema, momentum: fast}]", "", "tricks[0].momentum", ["expected a number"]),
    ("[cosine]", "schedule: {iters: 60, lr_schedule: cosine}\n", "tricks[0]", ["changes nothing", "already cosine"]),
    ("[no_bias_decay]", "", "tricks[0]", ["changes nothing", "weight_decay is 0"]),
    ("[trivialaugment]", "", "tricks[0]", ["needs images", "'mnist1d' holds sequence inputs"]),
    ("[{name: autoaugment, policy: mnist}]", "", "tricks[0].policy", ["unknown value 'mnist'", "cifar10, imagenet, svhn"]),
    ("[autoaugment]", "", "tricks[0]", ["needs images"]),
    ("[zero_init_residual]", "", "tricks[0]", ["model 'mnist1d_mlp' has no residual blocks"]),
    ("[{name: warmup, fraction: 1.5}]", "", "tricks[0].fraction", ["must be in (0, 1)"]),
])
def test_bad_tricks_are_clear_errors(project, tricks, extra, key, words):
    with pytest.raises(ConfigError) as e:
        recipe(project, tricks, extra, name="bad")
    msg = str(e.value)
    assert "bad.yaml" in msg and key in msg and all(w in msg for w in words), msg


class LRLog(Hook):
    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.get_lr()["lr"][0])


def test_schedule_really_is_warmup_then_cosine(project):
    r = recipe(project, "[cosine, {name: warmup, fraction: 0.1}]")
    runner = build_runner(r, 0, ctx(project, r))
    log = LRLog()
    runner.register_hook(log)
    runner.train()
    lr0, lrs = 0.01, log.lrs
    assert len(lrs) == 60
    for i in range(6):  # linear warmup from 0.1 * lr over 6 iterations (MMEngine's LinearLR reaches lr at the 6th)
        assert lrs[i] == pytest.approx(lr0 * (0.1 + 0.9 * i / 5), rel=1e-6)
    for i in range(6, 60):  # then cosine from lr to 0 over the remaining 54
        assert lrs[i] == pytest.approx(0.5 * lr0 * (1 + math.cos(math.pi * (i - 6) / 54)), rel=1e-6)


def test_ema_weights_are_what_gets_evaluated(project):
    r = recipe(project, "[{name: ema, momentum: 0.05}]")
    runner = build_runner(r, 0, ctx(project, r))
    runner.train()
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == "EMAHook")
    live = {k: v.clone() for k, v in runner.model.state_dict().items()}
    averaged = {k[len("module."):]: v for k, v in ema_hook.ema_model.state_dict().items() if k.startswith("module.")}
    assert any(not torch.equal(live[k], averaged[k]) for k in live)
    reported = runner.test_loop.run()["accuracy"]
    runner.model.load_state_dict(averaged)
    x, y = runner.test_dataloader.dataset.x, runner.test_dataloader.dataset.y
    with torch.no_grad():
        ema_acc = 100.0 * float((runner.model.net(x).argmax(-1) == y).float().mean())
    runner.model.load_state_dict(live)
    with torch.no_grad():
        live_acc = 100.0 * float((runner.model.net(x).argmax(-1) == y).float().mean())
    assert reported == pytest.approx(ema_acc) and ema_acc != live_acc


def test_mixup_mixes_inputs_and_labels():
    torch.manual_seed(0)
    x, y = torch.randn(8, 40), torch.arange(8) % 10
    mx, my = ct.mix(x, y, 10, mixup_alpha=0.4, cutmix_alpha=0.0)
    assert my.shape == (8, 10) and torch.allclose(my.sum(1), torch.ones(8))
    lam = float(my.max(1).values.min())  # every row: lam on one class, 1 - lam on another (or 1 if paired with itself)
    assert 0.5 <= lam < 1.0
    # each mixed input is the same convex combination of two originals as its label
    for i in range(8):
        a, b = my[i].topk(2).indices.tolist()
        if my[i].max() < 1:
            j = int((y == b).nonzero()[0]) if my[i, a] >= my[i, b] else int((y == a).nonzero()[0])
            w = float(my[i, y[i]])
            assert torch.allclose(mx[i], w * x[i] + (1 - w) * x[j], atol=1e-6)


def test_cutmix_pastes_a_region_with_area_weighted_labels():
    torch.manual_seed(1)
    x, y = torch.zeros(6, 1, 8, 8), torch.arange(6)
    x += torch.arange(6).view(6, 1, 1, 1).float()  # each image constant = its index
    mx, my = ct.mix(x, y, 6, mixup_alpha=0.0, cutmix_alpha=1.0)
    for i in range(6):
        own = float((mx[i] == i).float().mean())
        assert my[i, i] == pytest.approx(own) or (own == 1.0 and my[i, i] == 1.0)
    seq = torch.zeros(4, 40) + torch.arange(4).view(4, 1)
    ms, _ = ct.mix(seq, torch.arange(4), 4, 0.0, 1.0)
    changed = (ms != seq)  # on sequences the region is one contiguous segment
    for row in changed:
        idx = row.nonzero().flatten()
        assert len(idx) == 0 or idx.tolist() == list(range(int(idx[0]), int(idx[-1]) + 1))


def test_random_erasing_erases_regions_of_the_given_area():
    torch.manual_seed(0)
    x = torch.ones(200, 3, 16, 16)
    out = ct.random_erasing(x, p=0.5, min_area=0.1, max_area=0.2, value=0.0)
    erased = (out == 0).float().mean(dim=(1, 2, 3))
    hit = erased > 0
    assert 0.35 < float(hit.float().mean()) < 0.65
    assert float(erased[hit].min()) > 0.03 and float(erased[hit].max()) <= 0.26
    assert torch.equal((out[:, 0] == 0), (out[:, 2] == 0))  # the same region in every channel


def test_hflip_tta_averages_the_flipped_prediction(project):
    r = recipe(project, "[hflip_tta]")
    runner = build_runner(r, 0, ctx(project, r))
    model, x = runner.model, torch.randn(50, 40)
    with torch.no_grad():
        (pred, _, _), = model(x, torch.zeros(50, dtype=torch.long), mode="predict")
        expected = (model.net(x).softmax(-1) + model.net(x.flip(-1)).softmax(-1)).argmax(-1)
        plain = model.net(x).argmax(-1)
    assert torch.equal(pred, expected) and not torch.equal(pred, plain)


def test_zero_init_no_bias_decay_clip_and_longer_schedule_in_a_real_run(project):
    r = recipe(project, "[zero_init_residual, no_bias_decay, {name: clip_grad, max_norm: 0.5}, {name: longer_schedule, factor: 1.5}]",
               "model: {name: test_resnet}\noptim: {weight_decay: 0.01}\n", iters=40)
    runner = build_runner(r, 0, ctx(project, r))
    assert torch.count_nonzero(runner.model.net.block[3].weight) == 0
    runner.train()
    assert runner.iter == 60
    assert runner.optim_wrapper.clip_grad_kwargs == {"max_norm": 0.5}
    decays = {id(p): g["weight_decay"] for g in runner.optim_wrapper.optimizer.param_groups for p in g["params"]}
    net = runner.model.net
    assert decays[id(net.inp.bias)] == 0 and decays[id(net.block[3].weight)] == 0 and decays[id(net.inp.weight)] == 0.01


def test_label_smoothing_and_mixup_reach_the_loss(project):
    r = recipe(project, "[{name: label_smoothing, epsilon: 0.2}, mixup]")
    runner = build_runner(r, 0, ctx(project, r))
    model = runner.model
    x, y = torch.randn(16, 40), torch.arange(16) % 10
    torch.manual_seed(3)
    loss = model(x, y, mode="loss")["loss"]
    torch.manual_seed(3)
    mx, my = model.augment(x, y)
    expected = torch.nn.functional.cross_entropy(model.net(mx), my, label_smoothing=0.2)
    assert torch.allclose(loss, expected)
    assert my.ndim == 2 and (my.max(1).values < 1).any()


def test_policy_augment_draws_per_image_and_keeps_uint8():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    for policy in ("trivialaugment", "autoaugment-cifar10"):
        out = ct.policy_augment(x, policy)
        assert out.dtype == torch.uint8 and out.shape == x.shape
        changed = [not torch.equal(a, b) for a, b in zip(out, x)]
        assert sum(changed) >= 8  # not one op for the whole batch: most images change, differently
        torch.manual_seed(5)
        a = ct.policy_augment(x, policy)
        torch.manual_seed(5)
        assert torch.equal(a, ct.policy_augment(x, policy))


def test_all_sequence_tricks_together_in_a_real_run(project):
    from reprozoo.runs import execute

    r = recipe(project, "[cosine, warmup, label_smoothing, mixup, cutmix, random_erasing, {name: ema, momentum: 0.01}, "
                        "clip_grad, hflip_tta, longer_schedule]", name="everything", iters=100)
    m = execute(r, 0, progress=False)
    assert 10 < m["test"]["accuracy"] <= 100
    assert execute(r, 0, progress=False) == m  # finished: reused, not retrained


def test_cutout_zeroes_a_square_that_may_be_clipped():
    torch.manual_seed(0)
    x = torch.ones(400, 3, 32, 32)
    out = ct.cutout(x, size=16, p=1.0)
    zeroed = (out[:, 0] == 0)
    assert torch.equal(zeroed, out[:, 2] == 0)  # every channel
    areas = zeroed.float().sum((1, 2))
    assert float(areas.max()) == 256 and float(areas.min()) >= 64  # clipped at the border down to 8x8
    for m in zeroed[:20]:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert int(m.sum()) == len(rows) * len(cols)  # a rectangle: the square, clipped
    seq = ct.cutout(torch.ones(50, 40), size=8, p=0.5)
    hit = (seq == 0).any(1)
    assert 10 < int(hit.sum()) < 40 and int((seq == 0).sum(1).max()) == 8
