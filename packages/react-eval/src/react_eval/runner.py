"""`react-eval run`: one result JSON per (model, dataset, task), CLIP_benchmark-compatible, written atomically.
A rerun skips results that already exist for the same model and dataset checksum."""

from __future__ import annotations

import logging
import math
import re
import time

import fsspec

from ._loader_protocol import LoadedModel
from ._manifests import UserError, read_json, validate
from .datasets import Classification, DatasetError, load_classification, load_detection, load_retrieval
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
    raise UserError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def evaluate(loaded: LoadedModel, task: str, ds, options: dict, device: str):
    common = {"batch_size": options.get("batch_size", 64), "workers": options.get("workers", 2), "device": device}
    if task == "zeroshot_classification":
        return zeroshot_classification(loaded, ds, options.get("templates"), **common)
    if task == "zeroshot_retrieval":
        return zeroshot_retrieval(loaded, ds, **common)
    if task == "linear_probe":
        if not options.get("train_dataset"):
            raise UserError("linear_probe needs --train-dataset (the split the head is fitted on)")
        train = load_classification(options["train_dataset"], options.get("classnames"))
        return linear_probe(loaded, train, ds, options.get("shots"), tuple(options.get("seeds", (0, 1, 2))),
                            options.get("init_from_text", False), options.get("templates"), **common)
    return detection(loaded, ds, options.get("templates"), options.get("margin", 0.1), **common)


def run(model: str, dataset: str, task: str, out: str, pretrained: str | None = None, device: str = "cpu",
        loaded: LoadedModel | None = None, **options) -> dict:
    """Evaluate and write `out/<model>__<dataset>__<task>.json`; returns the result (existing one if unchanged)."""
    ds = _dataset(task, dataset, options)
    n = len(ds.images) if hasattr(ds, "images") else len(ds.coco["annotations"])
    if n == 0:
        raise DatasetError(f"{dataset}: no samples to evaluate")
    if isinstance(ds, Classification):
        print(f"{ds.name}: labels: {ds.label_note}")
        if ds.label_rule == "sorted_folders":
            logging.getLogger(__name__).warning("%s: %s", dataset, ds.label_note)
    uri = f"{out.rstrip('/')}/{result_name(model, pretrained, ds.name, task)}"
    fs, path = fsspec.core.url_to_fs(uri)
    loaded = loaded or load(model, pretrained, device)
    if fs.exists(path):
        try:
            previous = read_manifest(uri, EVAL_RESULT)
            # same data, same model spec, and the same model behind it (a retrained checkpoint has a new id)
            if previous["dataset_checksum"] == ds.checksum and previous["model_spec"] == model and \
                    previous["model"] == loaded.name and previous["lineage"] == loaded.lineage:
                print(f"{uri}: already evaluated, skipping")
                return previous
        except ManifestError:
            pass  # unreadable or stale: evaluate again
    start = time.perf_counter()
    metrics, details = evaluate(loaded, task, ds, options, device)
    if isinstance(ds, Classification):
        details = {**details, "labels": {"rule": ds.label_rule, "how": ds.label_note}}
    body = {"dataset": ds.name, "model": loaded.name, "pretrained": loaded.pretrained or "",
            "task": task, "metrics": {k: (None if v != v else v) for k, v in metrics.items()}, "language": "en",
            "model_spec": model, "dataset_uri": dataset, "dataset_checksum": ds.checksum, "n_samples": n,
            "seconds": round(time.perf_counter() - start, 3), "details": details,
            "options": {k: v for k, v in options.items() if k not in ("workers",)}}
    result = write_manifest(uri, EVAL_RESULT, body, loaded.lineage)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"{ds.name} / {task} / {loaded.name}: {shown}\nresult -> {uri}")
    return result


def check_suite(suite, where: str = "suite") -> dict:
    """A suite's shape, checked before anything runs; errors name the suite and the entry."""
    if not isinstance(suite, dict) or not isinstance(suite.get("datasets"), list) or not suite["datasets"]:
        raise UserError(f"{where}: a suite is a mapping with a non-empty 'datasets' list (and optionally 'models')")
    for i, d in enumerate(suite["datasets"]):
        if not isinstance(d, dict) or not d.get("dataset") or d.get("task") not in TASKS:
            raise UserError(f"{where}: datasets[{i}] needs 'dataset' and 'task' (one of {', '.join(TASKS)}), "
                            f"got {d!r}")
    for i, m in enumerate(suite.get("models") or []):
        if not isinstance(m, dict) or not m.get("model"):
            raise UserError(f"{where}: models[{i}] needs 'model', got {m!r}")
    return suite


def run_suite(suite: dict, out: str, device: str = "cpu", **defaults) -> list[dict]:
    """A suite: {"models": [{"model", "pretrained"?}], "datasets": [{"dataset", "task", ...options}]}."""
    check_suite(suite)
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


# --- reading results: ours, and CLIP_benchmark's own result files ------------------------------------------

CLIP_BENCHMARK_FIELDS = {"dataset": str, "model": str, "pretrained": str, "task": str, "metrics": dict}


def from_clip_benchmark(doc: dict, where: str) -> dict:
    """A CLIP_benchmark result file (`{"dataset", "model", "pretrained", "task", "metrics", "language"}`, no
    `kind`) as a result react-eval reads: its linear-probe metrics (`lp_acc1`, …) also under our names, and the
    dataset's ELEVATER metric as `main_metric` where it has one, so it compares with ours."""
    from .domain import dataset_metric

    for name, kind in CLIP_BENCHMARK_FIELDS.items():
        if not isinstance(doc.get(name), kind):
            raise ManifestError(f"{where}: a CLIP_benchmark result needs field '{name}' ({kind.__name__}), got "
                                f"{doc.get(name)!r}")
    metrics = {}
    for k, v in doc["metrics"].items():
        if isinstance(v, bool) or not isinstance(v, int | float | None):
            continue  # CLIP_benchmark also stores strings and flags there (e.g. a classification report)
        metrics[k] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    if doc["task"] == "linear_probe":
        metrics |= {k[3:]: v for k, v in metrics.items() if k.startswith("lp_") and k[3:] not in metrics}
    own = dataset_metric(doc["dataset"]) if doc["task"] == "zeroshot_classification" else None
    if own and metrics.get(own) is not None:
        metrics["main_metric"] = metrics[own]
    return {"dataset": doc["dataset"], "model": doc["model"], "pretrained": doc["pretrained"], "task": doc["task"],
            "metrics": metrics, "language": str(doc.get("language", "en")), "model_spec": doc["model"],
            "lineage": [], "details": {}, "source": "clip_benchmark"}


def read_result_file(uri: str) -> dict | None:
    """One result file: ours (validated), or CLIP_benchmark's; None for a JSON file that is neither (another
    manifest, a suite…). A file that is not valid JSON, or a result with a bad field, is an error naming it."""
    doc = read_json(uri, "result")
    if doc.get("kind") == EVAL_RESULT:
        return validate(doc, EVAL_RESULT, "react-eval", uri) | {"source": "react-eval"}
    if "kind" not in doc and "metrics" in doc and "task" in doc:
        return from_clip_benchmark(doc, uri)
    return None


def read_results(folders, missing_ok: bool = False) -> list[dict]:
    """Every result in the folders (or result files) given: react-eval's and CLIP_benchmark's. A folder that does
    not exist is an error unless `missing_ok`; JSON files that are not results are skipped with a warning."""
    results = []
    for folder in folders:
        fs, path = fsspec.core.url_to_fs(str(folder))
        if not fs.exists(path):
            if missing_ok:
                continue
            raise UserError(f"{folder}: no such results folder or file")
        files = [path] if fs.isfile(path) else sorted(fs.glob(f"{path.rstrip('/')}/*.json"))
        for f in files:
            uri = fs.unstrip_protocol(f) if "://" in str(folder) else f
            result = read_result_file(uri)
            if result is None:
                logging.getLogger(__name__).warning("%s: not an eval result (react-eval or CLIP_benchmark), skipped",
                                                    uri)
                continue
            result["file"] = uri
            results.append(result)
    return results
