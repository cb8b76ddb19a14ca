"""Reading eval results: react-eval's result files and CLIP_benchmark's own. No torch: `compare` and `report`
import only this."""

from __future__ import annotations

import logging
import math

import fsspec

from ._manifests import UserError, read_json, validate
from .manifest import EVAL_RESULT, ManifestError

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


def read_results(folders, *, missing_ok: bool = False) -> list[dict]:
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
