"""How each trick changes a detection run: the resolved recipe (schedule) or the MMDetection config.

Each is written as MMDetection's own configs write it: `multiscale_train` as the zoo's `ms-1x`
configs (RandomChoiceResize over short edges 640..800 by 32 for the 1333x800 scale), `giou_loss`
as `faster-rcnn_r50_fpn_giou_1x_coco.py`, `ema` as the zoo's EMAHook with ExpMomentumEMA,
`longer_schedule` stretches the epochs and the step milestones (2x of the 1x schedule = the zoo's
2x), `hflip_tta` evaluates through DetTTAModel over the image and its flip (`retinanet_tta.py`).
"""
from __future__ import annotations

import copy

from ...errors import ConfigError
from ..openmmlab import inner_dataset, test_time_augmentation


def box_head(cfg):
    """The head that regresses the final boxes: the RoI head's of a two-stage detector, else the dense head."""
    roi = cfg.model.get("roi_head")
    return roi.bbox_head if roi is not None else cfg.model.bbox_head


def _resize(pipeline: list, file) -> dict:
    for step in pipeline:
        if step.get("type") == "Resize":
            return step
    raise ConfigError(file, "tricks", "multiscale_train needs a Resize step in the training pipeline; found "
                      + ", ".join(str(s.get("type")) for s in pipeline))


def check(config: dict, cfg, file) -> None:
    """Reject a trick the config cannot take or already has (parameter ranges are checked in `reprozoo.tricks`)."""
    for i, t in enumerate(config["tricks"]):
        if t["name"] == "giou_loss" and box_head(cfg).loss_bbox.get("type") == "GIoULoss":
            raise ConfigError(file, f"tricks[{i}]", f"trick 'giou_loss' changes nothing: {config['config']} already "
                                                    "regresses boxes with GIoULoss")
        if t["name"] == "multiscale_train":
            _resize(inner_dataset(cfg.train_dataloader.dataset).pipeline, file)


def patch_recipe(config: dict) -> dict:
    """The recipe with the schedule tricks applied (a new dict): `schedule.epochs` scaled."""
    cfg = copy.deepcopy(config)
    for t in cfg["tricks"]:
        if t["name"] == "longer_schedule":
            cfg["schedule"]["epoch_factor"] = cfg["schedule"].get("epoch_factor", 1.0) * t["factor"]
    return cfg


def patch_config(cfg, tricks: list[dict], file=None) -> list[dict]:
    """Apply the config tricks to `cfg` in place; return the hooks they add."""
    hooks = []
    for t in tricks:
        if t["name"] == "giou_loss":
            head = box_head(cfg)
            head.reg_decoded_bbox = True
            head.loss_bbox = dict(type="GIoULoss", loss_weight=t["weight"])
        elif t["name"] == "multiscale_train":
            loader = copy.deepcopy(cfg.train_dataloader.to_dict())
            pipeline = inner_dataset(loader["dataset"])["pipeline"]
            resize = _resize(pipeline, file)
            long, short = resize["scale"]
            shorts = [round(short * (t["min_scale"] + (1 - t["min_scale"]) * i / (t["steps"] - 1))) for i in range(t["steps"])]
            pipeline[pipeline.index(resize)] = dict(type="RandomChoiceResize", scales=[(long, s) for s in shorts],
                                                    keep_ratio=resize.get("keep_ratio", True))
            cfg.train_dataloader = loader  # Config stores a copy: assign after editing
        elif t["name"] == "ema":
            hooks.append(dict(type="EMAHook", ema_type="ExpMomentumEMA", momentum=t["momentum"], update_buffers=True, priority=49))
    return hooks


def patch_test(runner, cfg, tricks: list[dict]) -> None:
    """Before the final test: "hflip_tta" evaluates the trained model through MMDetection's DetTTAModel."""
    if not any(t["name"] == "hflip_tta" for t in tricks):
        return
    from mmdet.models import DetTTAModel

    tta_cfg = dict(nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)  # retinanet_tta.py's
    test_time_augmentation(runner, cfg, flip_tta_pipeline, lambda model: DetTTAModel(module=model, tta_cfg=tta_cfg))


def flip_tta_pipeline(test_pipeline: list) -> list:
    """The test pipeline as a TestTimeAug over {no flip, horizontal flip} after the resize; the packed
    meta data carry the flip, which DetTTAModel undoes on the boxes before merging them."""
    steps = [copy.deepcopy(dict(s)) for s in test_pipeline]
    if steps[0].get("type") != "LoadImageFromFile":
        raise ValueError(f"the test pipeline must start with LoadImageFromFile, got {steps[0].get('type')!r}")
    pack = steps[-1]
    if pack.get("type") != "PackDetInputs":
        raise ValueError(f"the test pipeline must end with PackDetInputs, got {pack.get('type')!r}")
    pack["meta_keys"] = (*pack.get("meta_keys", ("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")), "flip", "flip_direction")
    at = next((i for i, s in enumerate(steps) if s.get("type") == "Resize"), 0) + 1
    flips = [dict(type="RandomFlip", prob=1.0), dict(type="RandomFlip", prob=0.0)]
    return [steps[0], dict(type="TestTimeAug", transforms=[[s] for s in steps[1:at]] + [flips] + [[s] for s in steps[at:]])]
