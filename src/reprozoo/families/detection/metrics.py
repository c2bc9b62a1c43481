"""Box AP as MMDetection's CocoMetric computes it (pycocotools' COCOeval, the same parameters),
unrounded, on the images actually evaluated, with an image-level bootstrap for subsets."""
from __future__ import annotations

import tempfile

import numpy as np
from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@METRICS.register_module()
class CocoBoxMetric(CocoMetric):
    """CocoMetric for boxes with three changes: scores in percent without CocoMetric's rounding to
    three decimals (0.1 AP, too coarse for seed statistics), only the evaluated images count (with
    a subset, CocoMetric scores every image of the annotation file, missing ones as misses), and the
    last COCOeval is kept for `bootstrap_ap`."""

    default_prefix = ""

    def __init__(self, **kwargs):
        super().__init__(metric="bbox", **kwargs)
        self.last_eval, self.last_img_ids, self.last_dets = None, [], []

    def compute_metrics(self, results: list) -> dict:
        from mmengine.fileio import load
        from pycocotools.coco import COCO

        gts, preds = zip(*results)
        with tempfile.TemporaryDirectory() as tmp:
            if self._coco_api is None:
                self._coco_api = COCO(self.gt_to_coco_json(gt_dicts=gts, outfile_prefix=f"{tmp}/gt"))
            self.cat_ids = self._coco_api.get_cat_ids(cat_names=self.dataset_meta["classes"])
            dets = load(self.results2json(preds, f"{tmp}/results")["bbox"])
        self.last_img_ids = sorted({p["img_id"] for p in preds})
        self.last_dets = dets  # COCO results format: the run's predictions.bbox.json
        self.last_eval = ev = coco_eval(self._coco_api, dets, self.cat_ids, self.last_img_ids,
                                        max_dets=list(self.proposal_nums), iou_thrs=self.iou_thrs)
        if ev is None:
            return dict.fromkeys(KEYS, 0.0)
        # COCOeval's -1 marks a size bucket without any ground-truth object: no score, not a bad one, so no key
        return {k: 100.0 * float(x) for k, x in zip(KEYS, ev.stats[:6]) if x >= 0}


def coco_eval(coco_gt, dets: list, cat_ids: list, img_ids: list, max_dets=(100, 300, 1000), iou_thrs=None):
    """COCOeval over `img_ids` after evaluate/accumulate/summarize, or None when there is no detection."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    if not dets:
        return None
    ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
    ev.params.catIds, ev.params.imgIds, ev.params.maxDets = list(cat_ids), list(img_ids), list(max_dets)
    if iou_thrs is not None:
        ev.params.iouThrs = np.asarray(iou_thrs)
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def bootstrap_ap(ev, replicates: int = 200, seed: int = 0) -> np.ndarray:
    """AP (percent) of `replicates` resamplings of the evaluated images with replacement.

    Reuses COCOeval's per-image matches (`evalImgs`) and re-accumulates them for each resample:
    the images are the sampling unit, as a test set is a sample of images."""
    import contextlib
    import copy
    import io

    p = ev.params
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    rng = np.random.default_rng(seed)
    out = np.empty(replicates)
    for r in range(replicates):
        pick = rng.integers(0, n_img, n_img)
        b = copy.copy(ev)
        b.params = copy.deepcopy(p)
        b.params.imgIds = list(range(n_img))  # the resample's own image slots: duplicates stay distinct
        b._paramsEval = copy.deepcopy(b.params)
        b.evalImgs = [ev.evalImgs[(k * n_area + a) * n_img + i] for k in range(len(p.catIds)) for a in range(n_area) for i in pick]
        with contextlib.redirect_stdout(io.StringIO()):
            b.accumulate()
        prec = b.eval["precision"][:, :, :, 0, -1]  # all IoUs, recalls, classes; area all; the largest maxDets
        out[r] = 100.0 * float(prec[prec > -1].mean()) if (prec > -1).any() else 0.0
    return out
