"""The trick library: named, documented changes to a recipe (cosine schedule, EMA, mixup...).

Each trick is declared here once: its parameters with defaults (the signature) and the range each
may take (`checks`, applied to every family when a recipe is loaded) and the paper it comes from.
Which tricks a family implements, and how each changes a run, is the family's business: its
`tricks` attribute and `families/<family>/tricks.py`; the core names no family. Recipes list
tricks by name (`tricks: [cosine]`) or with parameters (`tricks: [{name: ema, momentum: 0.001}]`);
an unknown trick, one its family does not implement, or one that would change nothing in the
recipe is an error.
"""
from __future__ import annotations

import math

from .errors import ConfigError
from .registry import Registry
from .schema import between, one_of

TRICKS = Registry("trick")


def _trick(name: str, source: str, **checks):
    """Register a trick; `checks` maps a parameter to its range (see `schema.between`)."""
    return TRICKS.register(name, source=source, checks=checks)


PROBABILITY = between(0, 1)
POSITIVE = between(0, math.inf, lo_open=True, hi_open=True)
FRACTION = between(0, 1, lo_open=True, hi_open=True)


@_trick("cosine", "Loshchilov & Hutter, SGDR, ICLR 2017 (cosine annealing without restarts)")
def cosine():
    """Cosine learning-rate decay to 0 over the whole schedule (after any warmup)."""


@_trick("warmup", "Goyal et al., Accurate, Large Minibatch SGD, 2017, sec. 2.2 (gradual warmup)",
        fraction=FRACTION, start_factor=between(0, 1, lo_open=True))
def warmup(fraction: float = 0.05, start_factor: float = 0.1):
    """Linear learning-rate warmup over the first `fraction` of the iterations, from `start_factor` x lr."""


@_trick("label_smoothing", "Szegedy et al., Rethinking the Inception Architecture, CVPR 2016, sec. 7",
        epsilon=between(0, 1, lo_open=True, hi_open=True))
def label_smoothing(epsilon: float = 0.1):
    """Cross-entropy against targets smoothed by `epsilon` towards the uniform distribution."""


@_trick("mixup", "Zhang et al., mixup: Beyond Empirical Risk Minimization, ICLR 2018", alpha=POSITIVE)
def mixup(alpha: float = 0.2):
    """Train on convex combinations of sample pairs and their labels, weight ~ Beta(alpha, alpha)."""


@_trick("cutmix", "Yun et al., CutMix, ICCV 2019", alpha=POSITIVE)
def cutmix(alpha: float = 1.0):
    """Paste a random region from another sample; labels mixed by the pasted area."""


@_trick("random_erasing", "Zhong et al., Random Erasing Data Augmentation, AAAI 2020 (cutout: DeVries & Taylor 2017)",
        p=between(0, 1, lo_open=True), min_area=between(0, 1, lo_open=True), max_area=between(0, 1, lo_open=True))
def random_erasing(p: float = 0.5, min_area: float = 0.02, max_area: float = 0.33, value: float = 0.0):
    """With probability p, set a random region of each training input (area fraction in [min, max]) to `value`."""


@_trick("cutout", "DeVries & Taylor, Improved Regularization of CNNs with Cutout, 2017 (16x16 on CIFAR-10)",
        size=between(1, math.inf), p=between(0, 1, lo_open=True))
def cutout(size: int = 16, p: float = 1.0):
    """Zero a size x size square (a segment for 1-D signals) at a uniformly random centre of each training input."""


@_trick("ema", "Polyak & Juditsky 1992 (weight averaging); MMEngine EMAHook, ExponentialMovingAverage", momentum=FRACTION)
def ema(momentum: float = 0.0002):
    """Evaluate an exponential moving average of the weights: ema = (1 - momentum) * ema + momentum * w."""


@_trick("no_bias_decay", "Goyal et al. 2017 / He et al., Bag of Tricks, CVPR 2019, sec. 3.1")
def no_bias_decay():
    """No weight decay on biases and normalisation parameters (MMEngine paramwise_cfg)."""


@_trick("zero_init_residual", "Goyal et al. 2017, sec. 5.1; He et al., Bag of Tricks, CVPR 2019, sec. 3.1")
def zero_init_residual():
    """Zero-initialise the last normalisation layer's scale in each residual block."""


@_trick("clip_grad", "Pascanu et al., On the difficulty of training RNNs, ICML 2013", max_norm=POSITIVE)
def clip_grad(max_norm: float = 1.0):
    """Clip the global gradient norm to `max_norm` (MMEngine optim_wrapper.clip_grad)."""


@_trick("longer_schedule", "Wightman et al., ResNet strikes back, 2021; torchvision's 600-epoch recipe",
        factor=between(1, 100, lo_open=True))
def longer_schedule(factor: float = 2.0):
    """Multiply the number of iterations (and every milestone and warmup length) by `factor`."""


@_trick("hflip_tta", "Krizhevsky et al., ImageNet Classification with Deep CNNs, NeurIPS 2012, sec. 4.1")
def hflip_tta():
    """Test-time augmentation over the input and its flip along the last axis: softmax averaged (classification,
    segmentation), boxes merged by NMS (detection)."""


@_trick("dice_loss", "Milletari et al., V-Net, 3DV 2016 (Dice loss); mmsegmentation configs/unet *ce-1.0-dice-3.0* (weights)",
        weight=POSITIVE)
def dice_loss(weight: float = 3.0):
    """Add a Dice loss with weight `weight` to the decode head's cross-entropy (weight 1)."""


@_trick("giou_loss", "Rezatofighi et al., Generalized Intersection over Union, CVPR 2019; mmdetection configs/faster_rcnn/faster-rcnn_r50_fpn_giou_1x_coco.py (weight)",
        weight=POSITIVE)
def giou_loss(weight: float = 10.0):
    """Regress decoded boxes with the GIoU loss (weight `weight`) instead of the L1/smooth-L1 loss on deltas."""


@_trick("multiscale_train", "mmdetection configs/faster_rcnn/faster-rcnn_r50-caffe_fpn_ms-1x_coco.py (short edges 640..800 by 32)",
        min_scale=FRACTION, steps=between(2, 100))
def multiscale_train(min_scale: float = 0.8, steps: int = 6):
    """Resize each training image to a short edge drawn from `steps` evenly spaced values in [min_scale, 1] x the config's."""


@_trick("trivialaugment", "Mueller & Hutter, TrivialAugment, ICCV 2021 (torchvision TrivialAugmentWide)")
def trivialaugment():
    """One random image operation at a random strength per training image (images only)."""


@_trick("autoaugment", "Cubuk et al., AutoAugment, CVPR 2019 (torchvision AutoAugment, CIFAR10 policy)",
        policy=one_of("cifar10", "imagenet", "svhn"))
def autoaugment(policy: str = "cifar10"):
    """The learned AutoAugment policy (cifar10, imagenet or svhn) per training image (images only)."""


@_trick("layer_decay", "Clark et al., ELECTRA, ICLR 2020, appendix A; Sun et al., How to Fine-Tune BERT for Text Classification, 2019",
        rate=FRACTION)
def layer_decay(rate: float = 0.9):
    """Layer-wise learning-rate decay: the head keeps lr, encoder layer i from the top gets lr * rate**i, the embeddings the lowest."""


@_trick("reinit_top", "Zhang et al., Revisiting Few-sample BERT Fine-tuning, ICLR 2021, sec. 5",
        layers=between(1, 1000))
def reinit_top(layers: int = 1):
    """Re-initialise the pooler and the top `layers` encoder layers of a pretrained model before fine-tuning."""


def check_family(tricks: list[dict], family, file) -> None:
    """Each trick once, and implemented by `family` (its `tricks` attribute)."""
    names = [t["name"] for t in tricks]
    for i, t in enumerate(tricks):
        if t["name"] not in family.tricks:
            raise ConfigError(file, f"tricks[{i}]", f"trick {t['name']!r} is not available for family {family.name!r}",
                              sorted(family.tricks))
        if names.index(t["name"]) != i:
            raise ConfigError(file, f"tricks[{i}]", f"trick {t['name']!r} is listed twice")
        if t["name"] == "random_erasing" and t["min_area"] > t["max_area"]:
            raise ConfigError(file, f"tricks[{i}].min_area", f"must be <= max_area ({t['max_area']!r}), got {t['min_area']!r}")


def label(trick: dict) -> str:
    """`ema` for default parameters, `ema(momentum=0.001)` otherwise: how tables and arm names show a trick."""
    import inspect

    params = inspect.signature(TRICKS.get(trick["name"])).parameters
    changed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in trick.items()
               if k != "name" and v != params[k].default]
    return f"{trick['name']}({','.join(changed)})" if changed else trick["name"]
