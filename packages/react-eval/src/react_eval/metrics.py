"""Metrics on numpy arrays: top-k accuracy, mean per-class recall, 11-point mAP, ROC-AUC, retrieval recall@k.
(Detection AP is pycocotools' COCOeval, never reimplemented here.)"""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest logits; NaN when there are fewer than k classes."""
    if logits.shape[1] < k:
        return float("nan")
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def per_class_recall(predictions: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of each class (NaN for classes with no samples)."""
    recall = np.full(n_classes, np.nan)
    for c in range(n_classes):
        mask = labels == c
        if mask.any():
            recall[c] = float((predictions[mask] == c).mean())
    return recall


def mean_per_class_recall(predictions: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    return float(np.nanmean(per_class_recall(predictions, labels, n_classes)))


def average_precision_11pt(scores: np.ndarray, positives: np.ndarray) -> float:
    """VOC2007's 11-point interpolated AP of one class."""
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(float)
    if hits.sum() == 0:
        return float("nan")
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / hits.sum()
    return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                          for t in np.linspace(0, 1, 11)]))


def mean_average_precision_11pt(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes of the 11-point AP; `targets` is a (samples × classes) 0/1 matrix."""
    return float(np.nanmean([average_precision_11pt(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]))


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties count half."""
    pos, neg = scores[positives.astype(bool)], scores[~positives.astype(bool)]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    values = np.concatenate([pos, neg])
    for v in np.unique(values):  # average ranks of ties
        tie = values == v
        ranks[tie] = ranks[tie].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def retrieval_recall(similarity: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Fraction of queries (rows) with at least one relevant item among their k most similar columns."""
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return float(np.mean([bool(relevant[i] & set(top[i].tolist())) for i in range(len(top))]))
