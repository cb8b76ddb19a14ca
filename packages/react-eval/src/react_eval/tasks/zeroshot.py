"""Zero-shot classification: prompt-ensemble classifier, logits = 100 · image · Wᵀ.

A model that carries a trained classifier (react-tune's linear-head, `LoadedModel.classifier`) is scored with it,
ensembled with the zero-shot classifier as the protocol defines (`_loader_protocol.TrainedClassifier`), when the
dataset's classes are exactly the head's by name; the result's details record that it was used."""

from __future__ import annotations

import numpy as np

from .._domainfiles import TargetClass, prompt_classes
from .._loader_protocol import LoadedModel, TrainedClassifier
from ..datasets import Classification, DatasetError
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


def head_order(head: TrainedClassifier, ds: Classification) -> list[int]:
    """For each of the dataset's classes, its row in the trained head; the two class lists must hold exactly the
    same names (a head never scores a class it was not trained for, nor silently relabels one)."""
    rows = {c: i for i, c in enumerate(head.classes)}
    missing = [c for c in ds.classnames if c not in rows]
    extra = [c for c in head.classes if c not in set(ds.classnames)]
    if missing or extra:
        parts = ([f"{len(missing)} dataset class(es) the head was not trained for: {', '.join(missing[:10])}"]
                 if missing else []) + ([f"{len(extra)} head class(es) the dataset lacks: {', '.join(extra[:10])}"]
                                        if extra else [])
        raise DatasetError(f"{ds.uri}: the model's trained {head.kind} classifier does not match this dataset's "
                           f"classes by name ({'; '.join(parts)}). Evaluate it on a dataset with exactly its classes "
                           "(--classnames renames a dataset's classes), or train the head on a retrieval set of "
                           "this dataset's classes")
    return [rows[c] for c in ds.classnames]


def zeroshot_classification(loaded: LoadedModel, ds: Classification, templates: str | None = None, batch_size: int = 64,
                            workers: int = 2, device: str = "cpu", prompt_names: str = "as-given",
                            frequency: str | None = None):
    head = getattr(loaded, "classifier", None)
    order = head_order(head, ds) if head is not None else None  # refuse a mismatch before encoding anything
    # a trained head's zero-shot part uses the prompts its ensemble weight was chosen with, unless --templates
    chosen = load_templates(templates, head.templates if head is not None else ds.templates)
    # REAL-Prompt: each class prompted by its most frequent name in the pretraining captions; metrics and per-class
    # results keep the dataset's own class names
    names = [c.name for c in prompt_classes([TargetClass(n) for n in ds.classnames], prompt_names, frequency)]
    weights = zeroshot_classifier(loaded, names, chosen, device)
    images = encode_images(loaded, ds.images, batch_size, workers, device)
    logits = 100.0 * images @ weights.T
    used = {}
    if head is not None:
        w = head.ensemble_weight
        if w:  # w = 0 is exactly the zero-shot logits above
            head_logits = (images @ head.weight[order].T + head.bias[order]) * (100.0 / head.logit_scale)
            logits = (1 - w) * logits + w * head_logits
        used = {"classifier": {"used": True, "kind": head.kind, "ensemble_weight": w, "classes": len(head.classes),
                               "class_order": "same" if order == list(range(len(order))) else "mapped by name",
                               "templates": templates or "the checkpoint's", "n_templates": len(chosen)}}
    metrics, details = classification_metrics(logits, np.asarray(ds.labels), ds.classnames, dataset_metric(ds.name))
    if prompt_names != "as-given":
        used = used | {"prompt_names": {"rule": prompt_names, "frequency": frequency,
                                        "renamed": {c: n for c, n in zip(ds.classnames, names, strict=True) if c != n}}}
    return metrics, details | used
