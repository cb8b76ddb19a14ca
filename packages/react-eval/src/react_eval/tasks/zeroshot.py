"""Zero-shot classification: prompt-ensemble classifier, logits = 100 · image · Wᵀ."""

from __future__ import annotations

import numpy as np

from .._loader_protocol import LoadedModel
from ..datasets import Classification
from ..domain import dataset_metric, load_templates
from ..features import encode_images, zeroshot_classifier
from ..metrics import mean_average_precision_11pt, per_class_recall, roc_auc, topk_accuracy


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classnames: list[str], metric: str | None):
    predictions = logits.argmax(axis=1)
    recall = per_class_recall(predictions, labels, len(classnames))
    metrics = {"acc1": topk_accuracy(logits, labels, 1), "acc5": topk_accuracy(logits, labels, 5),
               "mean_per_class_recall": float(np.nanmean(recall))}
    if metric == "mean_average_precision_11pt":
        metrics[metric] = mean_average_precision_11pt(logits, np.eye(len(classnames))[labels])
    elif metric == "roc_auc" and len(classnames) == 2:
        metrics[metric] = roc_auc(logits[:, 1] - logits[:, 0], labels == 1)
    if metric:
        metrics["main_metric"] = metrics.get(metric, metrics["acc1"])
    return metrics, {"recall": {c: (None if np.isnan(r) else float(r)) for c, r in zip(classnames, recall,
                                                                                          strict=True)}}


def zeroshot_classification(loaded: LoadedModel, ds: Classification, templates: str | None = None, batch_size: int = 64,
                            workers: int = 2, device: str = "cpu"):
    chosen = load_templates(templates, ds.templates)
    weights = zeroshot_classifier(loaded, ds.classnames, chosen, device)
    images = encode_images(loaded, ds.images, batch_size, workers, device)
    logits = 100.0 * images @ weights.T
    return classification_metrics(logits, np.asarray(ds.labels), ds.classnames, dataset_metric(ds.name))
