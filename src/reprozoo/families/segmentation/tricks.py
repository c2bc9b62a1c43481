"""How each trick changes a segmentation run: the resolved recipe (schedule) or the MMSegmentation config.

`dice_loss` gives the decode head the CE + Dice loss pair exactly as the model zoo's
`ce-1.0-dice-3.0` configs write it; `ema` adds MMEngine's EMAHook; `longer_schedule` stretches
the iterations (the poly schedule follows); `hflip_tta` evaluates with MMSegmentation's own
test-time augmentation (SegTTAModel: softmax averaged over the image and its horizontal flip).
"""
from __future__ import annotations

import copy

from ...errors import ConfigError
from ..openmmlab import test_time_augmentation


def _losses(cfg) -> list:
    loss = cfg.model.decode_head.loss_decode
    return list(loss) if isinstance(loss, (list, tuple)) else [loss]


def check(config: dict, cfg, file) -> None:
    """Reject a trick the config already has (parameter ranges are checked in `reprozoo.tricks`)."""
    for i, t in enumerate(config["tricks"]):
        if t["name"] == "dice_loss" and any(loss.get("type") == "DiceLoss" for loss in _losses(cfg)):
            raise ConfigError(file, f"tricks[{i}]", f"trick 'dice_loss' changes nothing: {config['config']} already has "
                                                    "a DiceLoss in model.decode_head.loss_decode")


def patch_recipe(config: dict) -> dict:
    """The recipe with the schedule tricks applied (a new dict)."""
    cfg = copy.deepcopy(config)
    for t in cfg["tricks"]:
        if t["name"] == "longer_schedule":
            cfg["schedule"]["iters"] = round(cfg["schedule"]["iters"] * t["factor"])
    return cfg


def patch_config(cfg, tricks: list[dict]) -> list[dict]:
    """Apply the config tricks to `cfg` in place; return the hooks they add."""
    hooks = []
    for t in tricks:
        if t["name"] == "dice_loss":
            first = _losses(cfg)[0]  # written as the zoo's ce-1.0-dice-3.0 configs write it
            ce = dict(type=first["type"], loss_name="loss_ce", loss_weight=first.get("loss_weight", 1.0))
            cfg.model.decode_head.loss_decode = [ce, dict(type="DiceLoss", loss_name="loss_dice", loss_weight=t["weight"])]
        elif t["name"] == "ema":
            hooks.append(dict(type="EMAHook", momentum=t["momentum"], update_buffers=True, priority="ABOVE_NORMAL"))
    return hooks


def patch_test(runner, cfg, tricks: list[dict]) -> None:
    """Before the final test: "hflip_tta" evaluates the trained model through MMSegmentation's SegTTAModel."""
    if not any(t["name"] == "hflip_tta" for t in tricks):
        return
    from mmseg.models import SegTTAModel

    test_time_augmentation(runner, cfg, flip_tta_pipeline, lambda model: SegTTAModel(module=model))


def flip_tta_pipeline(test_pipeline: list) -> list:
    """The test pipeline as a TestTimeAug over {no flip, horizontal flip}, flipping before the
    annotation is loaded: predictions are flipped back by the segmentor, the ground truth never moves."""
    steps = [copy.deepcopy(dict(s)) for s in test_pipeline]
    if steps[0].get("type") != "LoadImageFromFile":
        raise ValueError(f"the test pipeline must start with LoadImageFromFile, got {steps[0].get('type')!r}")
    at = next((i for i, s in enumerate(steps) if s.get("type") in ("LoadAnnotations", "PackSegInputs")), len(steps))
    flips = [dict(type="RandomFlip", prob=0.0, direction="horizontal"), dict(type="RandomFlip", prob=1.0, direction="horizontal")]
    transforms = [[s] for s in steps[1:at]] + [flips] + [[s] for s in steps[at:]]
    return [steps[0], dict(type="TestTimeAug", transforms=transforms)]
