"""`react-eval run`: one result JSON per (model, dataset, task), CLIP_benchmark-compatible, written atomically.
A rerun skips results that already exist for the same model and dataset checksum."""

from __future__ import annotations

import json
import re
import time

import fsspec

from .datasets import load_classification, load_detection, load_retrieval
from .loaders import load
from .manifest import EVAL_RESULT, ManifestError, read_manifest, write_manifest
from .tasks.detection import detection
from .tasks.linear_probe import linear_probe
from .tasks.retrieval import zeroshot_retrieval
from .tasks.zeroshot import zeroshot_classification

TASKS = ("zeroshot_classification", "zeroshot_retrieval", "linear_probe", "detection")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:]


def result_name(model: str, pretrained: str | None, dataset: str, task: str) -> str:
    model_part = _slug(model + (f"-{pretrained.rsplit('/', 1)[-1]}" if pretrained else ""))
    return f"{model_part}__{_slug(dataset)}__{task}.json"


def _dataset(task: str, uri: str, options: dict):
    if task in ("zeroshot_classification", "linear_probe"):
        return load_classification(uri, options.get("classnames"))
    if task == "zeroshot_retrieval":
        return load_retrieval(uri)
    if task == "detection":
        return load_detection(uri, options.get("images"), options.get("proposals"), options.get("split"))
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def evaluate(loaded: dict, task: str, ds, options: dict, device: str):
    common = {"batch_size": options.get("batch_size", 64), "workers": options.get("workers", 2), "device": device}
    if task == "zeroshot_classification":
        return zeroshot_classification(loaded, ds, options.get("templates"), **common)
    if task == "zeroshot_retrieval":
        return zeroshot_retrieval(loaded, ds, **common)
    if task == "linear_probe":
        if not options.get("train_dataset"):
            raise ValueError("linear_probe needs --train-dataset (the split the head is fitted on)")
        train = load_classification(options["train_dataset"], options.get("classnames"))
        return linear_probe(loaded, train, ds, options.get("shots"), tuple(options.get("seeds", (0, 1, 2))),
                            options.get("init_from_text", False), options.get("templates"), **common)
    return detection(loaded, ds, options.get("templates"), options.get("margin", 0.1), **common)


def run(model: str, dataset: str, task: str, out: str, pretrained: str | None = None, device: str = "cpu",
        loaded: dict | None = None, **options) -> dict:
    """Evaluate and write `out/<model>__<dataset>__<task>.json`; returns the result (existing one if unchanged)."""
    ds = _dataset(task, dataset, options)
    uri = f"{out.rstrip('/')}/{result_name(model, pretrained, ds.name, task)}"
    fs, path = fsspec.core.url_to_fs(uri)
    loaded = loaded or load(model, pretrained, device)
    if fs.exists(path):
        try:
            previous = read_manifest(uri, EVAL_RESULT)
            # same data, same model spec, and the same model behind it (a retrained checkpoint has a new id)
            if previous["dataset_checksum"] == ds.checksum and previous["model_spec"] == model and \
                    previous["lineage"] == loaded.get("lineage", []):
                print(f"{uri}: already evaluated, skipping")
                return previous
        except ManifestError:
            pass  # unreadable or stale: evaluate again
    start = time.perf_counter()
    metrics, details = evaluate(loaded, task, ds, options, device)
    n = len(ds.images) if hasattr(ds, "images") else len(ds.coco["annotations"])
    body = {"dataset": ds.name, "model": loaded["name"], "pretrained": loaded.get("pretrained") or "",
            "task": task, "metrics": {k: (None if v != v else v) for k, v in metrics.items()}, "language": "en",
            "model_spec": model, "dataset_uri": dataset, "dataset_checksum": ds.checksum, "n_samples": n,
            "seconds": round(time.perf_counter() - start, 3), "details": details,
            "options": {k: v for k, v in options.items() if k not in ("workers",)}}
    result = write_manifest(uri, EVAL_RESULT, body, loaded.get("lineage", []))
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"{ds.name} / {task} / {model}: {shown}\nresult -> {uri}")
    return result


def run_suite(suite: dict, out: str, device: str = "cpu", **defaults) -> list[dict]:
    """A suite: {"models": [{"model", "pretrained"?}], "datasets": [{"dataset", "task", ...options}]}."""
    results = []
    for m in suite["models"]:
        loaded = None
        for d in suite["datasets"]:
            options = defaults | {k: v for k, v in d.items() if k not in ("dataset", "task")}
            if loaded is None:
                loaded = load(m["model"], m.get("pretrained"), device)
            results.append(run(m["model"], d["dataset"], d["task"], out, m.get("pretrained"), device, loaded,
                               **options))
    return results


def read_results(folders) -> list[dict]:
    results = []
    for folder in folders:
        fs, path = fsspec.core.url_to_fs(folder)
        for f in sorted(fs.glob(f"{path.rstrip('/')}/*.json")):
            with fs.open(f, "rb") as fh:
                doc = json.loads(fh.read())
            if doc.get("kind") == EVAL_RESULT:
                results.append(read_manifest(f, EVAL_RESULT))
    return results
