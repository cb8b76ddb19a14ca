import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from react_eval.metrics import (
    average_precision_11pt,
    mean_per_class_recall,
    retrieval_recall,
    roc_auc,
    topk_accuracy,
)
from react_eval.tasks.detection import coco_ap


def test_accuracy_and_mean_per_class_on_hand_built_logits():
    logits = np.array([[3, 2, 1, 0, 0, 0], [0, 1, 5, 0, 0, 0], [1, 4, 0, 0, 0, 0], [0, 0, 0, 0, 9, 1]], float)
    labels = np.array([0, 1, 1, 5])
    assert topk_accuracy(logits, labels, 1) == 0.5  # rows 0 and 2
    assert topk_accuracy(logits, labels, 5) == 1.0
    assert math.isnan(topk_accuracy(logits[:, :4], labels % 4, 5))  # fewer than 5 classes
    # class 0: 1/1, class 1: 1/2, class 5: 0/1 -> mean over present classes
    assert mean_per_class_recall(logits.argmax(1), labels, 6) == pytest.approx((1 + 0.5 + 0) / 3)


def test_eleven_point_ap_and_roc_auc_on_hand_computed_cases():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    positives = np.array([1, 0, 1, 0])
    # precision at recall 0.5 = 1, at recall 1.0 = 2/3 -> 6 thresholds (0..0.5) at 1, 5 (0.6..1.0) at 2/3
    assert average_precision_11pt(scores, positives) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    # pairs (pos, neg): (0.9>0.8) (0.9>0.6) (0.7<0.8) (0.7>0.6) -> 3 of 4
    assert roc_auc(scores, positives) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)  # a tie counts half


def test_retrieval_recall_on_a_constructed_case():
    # 3 queries x 4 items; query 0's relevant item is ranked 1st, query 1's 3rd, query 2's last
    sim = np.array([[0.9, 0.1, 0.2, 0.3], [0.5, 0.4, 0.3, 0.9], [0.9, 0.8, 0.7, 0.1]])
    relevant = [{0}, {2, 1}, {3}]
    assert retrieval_recall(sim, relevant, 1) == pytest.approx(1 / 3)
    assert retrieval_recall(sim, relevant, 2) == pytest.approx(1 / 3)
    assert retrieval_recall(sim, relevant, 3) == pytest.approx(2 / 3)  # query 1 finds item 1 at rank 3
    assert retrieval_recall(sim, relevant, 4) == 1.0


def _coco():
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (1, 2)]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 40], "area": 800, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 60, 40, 30], "area": 1200, "iscrowd": 0}]
    cats = [{"id": 1, "name": "star"}, {"id": 2, "name": "ring"}]
    return {"images": images, "annotations": anns, "categories": cats}


def test_detection_ap_is_pycocotools_and_a_perfect_predictor_scores_one(tmp_path):
    coco = _coco()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco["annotations"]]
    assert coco_ap(coco, perfect) == {"AP": 1.0, "AP50": 1.0}
    # true boxes at 0.5, confident false positives above them: AP drops below 1
    noisy = [d | {"score": 0.5} for d in perfect] + [
        {"image_id": 2, "category_id": 2, "bbox": [5, 60, 40, 30], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [52, 50, 20, 40], "score": 0.95}]
    (tmp_path / "gt.json").write_text(json.dumps(coco))

    def direct(category_ids=None):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(tmp_path / "gt.json"))
            ev = COCOeval(gt, gt.loadRes(noisy), "bbox")
            if category_ids:
                ev.params.catIds = category_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return ev.stats

    stats = direct()
    ours = coco_ap(coco, noisy)
    assert ours == {"AP": pytest.approx(stats[0]), "AP50": pytest.approx(stats[1])} and ours["AP"] < 1.0
    assert coco_ap(coco, noisy, category_ids=[2])["AP50"] == pytest.approx(direct([2])[1])
    assert coco_ap(coco, perfect, category_ids=[2]) == {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)}
