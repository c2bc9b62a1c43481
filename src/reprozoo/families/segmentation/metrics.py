"""The evaluator of the retina recipes: MMSegmentation's IoUMetric, unrounded, with the vessel class's scores."""
from __future__ import annotations

import os

import torch
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class RetinaMetric(IoUMetric):
    """IoUMetric's per-image areas summed over the set, reported in percent without rounding.

    `Dice`/`IoU` are the foreground (last) class's, the numbers the UNet model-zoo table reports as
    Dice; `mDice`/`mIoU` average background and vessel; `aAcc` is pixel accuracy. IoUMetric itself
    rounds to two decimals, too coarse for seed statistics.
    """

    default_prefix = ""

    def __init__(self, **kwargs):
        super().__init__(iou_metrics=["mIoU", "mDice"], **kwargs)

    def process(self, data_batch: dict, data_samples) -> None:
        """IoUMetric's areas, plus each image's (K, K) pixel confusion matrix (rows: label, columns: prediction)
        and its file name, for the run's predictions file."""
        k = len(self.dataset_meta["classes"])
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze()
            label = sample["gt_sem_seg"]["data"].squeeze().to(pred)
            keep = label != self.ignore_index
            confusion = torch.bincount((label[keep] * k + pred[keep]).long().flatten(), minlength=k * k).view(k, k)
            self.results.append((*self.intersect_and_union(pred, label, k, self.ignore_index),
                                 os.path.basename(sample.get("img_path", "")), confusion.cpu()))

    def compute_metrics(self, results: list) -> dict:
        self.last = [(r[4], r[5]) for r in results]  # (image, confusion) per image: `predictions.write_confusions`
        intersect, union, pred, label = (torch.stack([r[i] for r in results]).sum(0).double() for i in range(4))
        dice = 2 * intersect / (pred + label)
        iou = intersect / union
        return {
            "Dice": 100 * float(dice[-1]), "mDice": 100 * float(dice.nanmean()),
            "IoU": 100 * float(iou[-1]), "mIoU": 100 * float(iou.nanmean()),
            "aAcc": 100 * float(intersect.sum() / label.sum()),
        }
