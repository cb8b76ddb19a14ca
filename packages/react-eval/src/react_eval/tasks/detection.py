"""Detection with ground-truth (or given) boxes, in two protocols:

- `box_classification`: crop each ground-truth box (with a context margin), classify the crop zero-shot,
  report mean per-class top-1 (and per split when base/novel category lists are given);
- `detection` (RegionCLIP's zero-shot protocol): every box (ground truth, or proposals when given) is scored
  against every class with its crop embedding; each (box, class) becomes a detection, evaluated by
  pycocotools' COCOeval (AP, AP50, and AP50 over the base and novel categories).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from .._loader_protocol import LoadedModel
from .._manifests import require
from ..datasets import DatasetError, Detection
from ..domain import load_templates
from ..features import encode_images, zeroshot_classifier
from ..metrics import per_class_recall


def _crop(box, margin: float, width: int, height: int):
    x, y, w, h = box
    dx, dy = w * margin, h * margin
    return (max(0, x - dx), max(0, y - dy), min(width, x + w + dx), min(height, y + h + dy))


def _boxes(ds: Detection, use_proposals: bool):
    images = {im["id"]: im for im in ds.coco["images"]}
    if use_proposals and ds.proposals is not None:
        return [(iid, box) for iid, boxes in sorted(ds.proposals.items()) for box in boxes], images
    return [(a["image_id"], a["bbox"]) for a in ds.coco["annotations"]], images


def _embed_boxes(loaded, ds, boxes, images, margin, batch_size, workers, device):
    refs = [("file", f"{ds.image_root}/{images[iid]['file_name']}") for iid, _ in boxes]
    crops = [_crop(b, margin, images[iid]["width"], images[iid]["height"]) for iid, b in boxes]
    return encode_images(loaded, refs, batch_size, workers, device, crops=crops, desc="boxes")


def box_accuracy(logits: np.ndarray, ds: Detection) -> tuple[dict, dict]:
    """Mean per-class top-1 of ground-truth boxes (and per base/novel split)."""
    categories = ds.coco["categories"]
    names = [c["name"] for c in categories]
    index = {c["id"]: i for i, c in enumerate(categories)}
    labels = np.array([index[a["category_id"]] for a in ds.coco["annotations"]])
    recall = per_class_recall(logits.argmax(axis=1), labels, len(names))
    metrics = {"mean_per_class_top1": float(np.nanmean(recall)),
               "acc1": float((logits.argmax(axis=1) == labels).mean())}
    for split, members in ds.split.items():
        chosen = [names.index(n) for n in members if n in names]
        metrics[f"mean_per_class_top1_{split}"] = float(np.nanmean(recall[chosen])) if chosen else float("nan")
    return metrics, {"recall": {n: (None if np.isnan(r) else float(r)) for n, r in zip(names, recall, strict=True)}}


def coco_ap(coco_gt: dict, detections: list[dict], category_ids=None) -> dict:
    """COCOeval bbox AP / AP50 (pycocotools, the official evaluator), optionally over some categories only."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_gt
        gt.createIndex()
        if not detections:
            return {"AP": 0.0, "AP50": 0.0}
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        if category_ids is not None:
            ev.params.catIds = list(category_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(max(ev.stats[0], 0.0)), "AP50": float(max(ev.stats[1], 0.0))}


def detection_ap(logits: np.ndarray, boxes: list, ds: Detection) -> dict:
    """Every (box, class) becomes a detection scored by the softmax over classes; COCOeval AP, AP50, per split."""
    categories = ds.coco["categories"]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    detections = [{"image_id": iid, "category_id": categories[c]["id"], "bbox": list(map(float, box)),
                   "score": float(probs[j, c])} for j, (iid, box) in enumerate(boxes) for c in range(len(categories))]
    metrics = coco_ap(ds.coco, detections)
    by_name = {c["name"]: c["id"] for c in categories}
    for split, members in ds.split.items():
        ids = [by_name[n] for n in members if n in by_name]
        if ids:
            metrics[f"AP50_{split}"] = coco_ap(ds.coco, detections, ids)["AP50"]
    return metrics


def detection(loaded: LoadedModel, ds: Detection, templates: str | None = None, margin: float = 0.1,
              batch_size: int = 64, workers: int = 2, device: str = "cpu", temperature: float = 100.0):
    """Both protocols; ground-truth boxes are embedded once, proposals (if given) once more."""
    require("pycocotools", "pip install 'react-eval[detection]'")
    if not ds.coco["annotations"]:
        raise DatasetError(f"{ds.uri}: no annotations to evaluate against")
    names = [c["name"] for c in ds.coco["categories"]]
    weights = zeroshot_classifier(loaded, names, load_templates(templates), device)
    gt_boxes, images = _boxes(ds, use_proposals=False)
    embed = (batch_size, workers, device)
    gt_logits = temperature * _embed_boxes(loaded, ds, gt_boxes, images, margin, *embed) @ weights.T
    metrics, per_class = box_accuracy(gt_logits, ds)
    if ds.proposals is not None:
        boxes, _ = _boxes(ds, use_proposals=True)
        logits = temperature * _embed_boxes(loaded, ds, boxes, images, margin, *embed) @ weights.T
    else:
        boxes, logits = gt_boxes, gt_logits
    return metrics | detection_ap(logits, boxes, ds), per_class
