"""`react-eval run`: one result JSON per (model, dataset, task), CLIP_benchmark-compatible, written atomically.
A rerun skips results that already exist for the same model and dataset checksum."""

from __future__ import annotations

import logging
import os
import re
import time

import fsspec

from ._loader_protocol import LoadedModel
from ._manifests import UserError
from .constants import DEFAULT_BATCH_SIZE, TASKS
from .datasets import Classification, DatasetError, load_classification, load_detection, load_retrieval
from .loaders import load
from .manifest import EVAL_RESULT, ManifestError, read_manifest, write_manifest

# reading results lives in results.py (no torch); these names stay importable from here
from .results import CLIP_BENCHMARK_FIELDS, from_clip_benchmark, read_result_file, read_results  # noqa: F401
from .tasks.detection import detection
from .tasks.linear_probe import linear_probe
from .tasks.retrieval import zeroshot_retrieval
from .tasks.zeroshot import zeroshot_classification


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-80:]


def result_name(model: str, pretrained: str | None, dataset: str, task: str, variant: str | None = None) -> str:
    model_part = _slug(model + (f"-{pretrained.rsplit('/', 1)[-1]}" if pretrained else ""))
    return f"{model_part}__{_slug(dataset)}__{task}{f'__{variant}' if variant else ''}.json"


def _dataset(task: str, uri: str, options: dict):
    if task in ("zeroshot_classification", "linear_probe"):
        return load_classification(uri, options.get("classnames"))
    if task == "zeroshot_retrieval":
        return load_retrieval(uri)
    if task == "detection":
        return load_detection(uri, options.get("images"), options.get("proposals"), options.get("split"))
    raise UserError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def default_workers() -> int:
    """DataLoader workers when none are given: min(4, CPU count) (more workers than cores makes PyTorch warn that
    the loader may freeze, and only adds contention)."""
    return min(4, os.cpu_count() or 1)


def default_device() -> str:
    """"cuda" when torch sees a GPU, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate(loaded: LoadedModel, task: str, ds, options: dict, device: str):
    """(metrics, details) of one loaded model on one loaded dataset; `options` as recorded by `run`."""
    common = {"batch_size": options.get("batch_size", DEFAULT_BATCH_SIZE),
              "workers": options.get("workers", default_workers()), "device": device}
    if task == "zeroshot_classification":
        return zeroshot_classification(loaded, ds, options.get("templates"), **common,
                                       prompt_names=options.get("prompt_names", "as-given"),
                                       frequency=options.get("frequency"))
    if task == "zeroshot_retrieval":
        return zeroshot_retrieval(loaded, ds, **common)
    if task == "linear_probe":
        if not options.get("train_dataset"):
            raise UserError("linear_probe needs --train-dataset (the split the head is fitted on)")
        train = load_classification(options["train_dataset"], options.get("classnames"))
        return linear_probe(loaded, train, ds, options.get("shots"), tuple(options.get("seeds", (0, 1, 2))),
                            options.get("init_from_text", False), options.get("templates"), **common)
    return detection(loaded, ds, options.get("templates"), options.get("margin", 0.1), **common)


def run(model: str, dataset: str, *, task: str, out: str, pretrained: str | None = None, device: str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None, templates: str | None = None,
        classnames: str | None = None, train_dataset: str | None = None, shots: int | None = None,
        seeds=(0, 1, 2), init_from_text: bool = False, proposals: str | None = None, images: str | None = None,
        split: str | None = None, margin: float = 0.1, prompt_names: str = "as-given", frequency: str | None = None,
        loaded: LoadedModel | None = None) -> dict:
    """Evaluate `model` on `dataset` for `task`; write `out/<model>__<dataset>__<task>.json` and return the result.

    model: an open_clip model name (with `pretrained`: a tag or a weights file), or `KIND:SPEC` for a registered
        loader (`react:CKPT_DIR` with react-tune installed).
    dataset: a path or fsspec URI; what it may be depends on `task` (docs/react-eval.md).
    task: one of TASKS. out: the results folder.
    device: "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:1", ….
    batch_size, workers: images per batch, DataLoader worker processes (None: min(4, CPU count); 0: decode in
        this process).
    templates, classnames: a built-in set name or a file, instead of the dataset's own.
    train_dataset, shots, seeds, init_from_text: linear_probe's train split, images per class (None: all),
        seeds, and whether the head starts from the zero-shot weights.
    proposals, images, split, margin: detection's boxes to score, image folder, base/novel split file and crop
        context margin.
    prompt_names, frequency: zero-shot classification with "most-frequent" prompts each class by its most frequent
        name in the pretraining captions, from a `react-index frequency --out` file (REAL-Prompt); its result is
        a separate file (`…__real-prompt.json`) whose model is named `<model>+real-prompt`.
    loaded: an already loaded model (run_suite passes one, so a model is loaded once per suite).

    A result that already exists for the same model spec, model, lineage and dataset checksum is not evaluated
    again: the existing one is returned. Raises UserError (DatasetError, …) for a user's mistake.
    """
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    device = default_device() if device == "auto" else device
    workers = default_workers() if workers is None else workers
    options = {"batch_size": batch_size, "workers": workers, "templates": templates, "classnames": classnames,
               "train_dataset": train_dataset, "shots": shots, "init_from_text": init_from_text,
               "proposals": proposals, "images": images, "split": split}
    prompt_names = prompt_names or "as-given"
    if prompt_names != "as-given" or frequency:
        if task != "zeroshot_classification":
            raise UserError(f"--prompt-names / --frequency apply to zeroshot_classification, not {task}")
        options |= {"prompt_names": prompt_names, "frequency": frequency}
    if task == "linear_probe":
        options["seeds"] = list(seeds)
    if task == "detection":
        options["margin"] = margin
    # unset options are None, or False for flags; `0 in (None, False)` is True in Python, so test identity
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    ds = _dataset(task, dataset, options)
    n = len(ds.images) if hasattr(ds, "images") else len(ds.coco["annotations"])
    if n == 0:
        raise DatasetError(f"{dataset}: no samples to evaluate")
    if isinstance(ds, Classification):
        print(f"{ds.name}: labels: {ds.label_note}")
        if ds.label_rule == "sorted_folders":
            logging.getLogger(__name__).warning("%s: %s", dataset, ds.label_note)
    variant = "real-prompt" if options.get("prompt_names", "as-given") != "as-given" else None
    uri = f"{out.rstrip('/')}/{result_name(model, pretrained, ds.name, task, variant)}"
    fs, path = fsspec.core.url_to_fs(uri)
    loaded = loaded or load(model, pretrained, device)
    if fs.exists(path):
        try:
            previous = read_manifest(uri, EVAL_RESULT)
            # same data, same model spec, and the same model behind it (a retrained checkpoint has a new id)
            if previous["dataset_checksum"] == ds.checksum and previous["model_spec"] == model and \
                    previous["model"] == _model_name(loaded, variant) and previous["lineage"] == loaded.lineage \
                    and _same_options(previous.get("options", {}), options):
                print(f"{uri}: already evaluated, skipping")
                return previous
        except ManifestError:
            pass  # unreadable or stale: evaluate again
    start = time.perf_counter()
    metrics, details = evaluate(loaded, task, ds, options, device)
    if getattr(loaded, "classifier", None) is not None and "classifier" not in details:
        details = {**details, "classifier": {"used": False, "kind": loaded.classifier.kind,
                                             "why": f"{task} does not use a trained classifier: the model's "
                                                    "features are the base model's"}}
    if isinstance(ds, Classification):
        details = {**details, "labels": {"rule": ds.label_rule, "how": ds.label_note}}
    body = {"dataset": ds.name, "model": _model_name(loaded, variant), "pretrained": loaded.pretrained or "",
            "task": task, "metrics": {k: (None if v != v else v) for k, v in metrics.items()}, "language": "en",
            "model_spec": model, "dataset_uri": dataset, "dataset_checksum": ds.checksum, "n_samples": n,
            "seconds": round(time.perf_counter() - start, 3), "details": details,
            "options": {k: v for k, v in options.items() if k not in ("workers",)}}
    result = write_manifest(uri, EVAL_RESULT, body, loaded.lineage)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    print(f"{ds.name} / {task} / {loaded.name}: {shown}\nresult -> {uri}")
    return result


def _model_name(loaded: LoadedModel, variant: str | None) -> str:
    return f"{loaded.name}+{variant}" if variant else loaded.name


def _same_options(previous: dict, options: dict) -> bool:
    """Whether a stored result was computed with these options (batch size and workers change no metric)."""
    ignore = ("workers", "batch_size")
    return {k: v for k, v in previous.items() if k not in ignore} == \
        {k: v for k, v in options.items() if k not in ignore}


# the keyword options of run() a suite entry may set (beside `dataset` and `task`)
SUITE_OPTIONS = ("batch_size", "workers", "templates", "classnames", "train_dataset", "shots", "seeds",
                 "init_from_text", "proposals", "images", "split", "margin", "prompt_names", "frequency")


def read_suite(uri: str) -> dict:
    """A suite file (YAML or JSON, any fsspec URI), read and checked (`check_suite`)."""
    import yaml

    with fsspec.open(uri, "rt") as f:
        try:
            spec = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise UserError(f"{uri}: not valid YAML/JSON ({e})") from None
    return check_suite(spec, uri)


def check_suite(suite, where: str = "suite") -> dict:
    """A suite's shape, checked before anything runs; errors name the suite and the entry."""
    if not isinstance(suite, dict) or not isinstance(suite.get("datasets"), list) or not suite["datasets"]:
        raise UserError(f"{where}: a suite is a mapping with a non-empty 'datasets' list (and optionally 'models')")
    for i, d in enumerate(suite["datasets"]):
        if not isinstance(d, dict) or not d.get("dataset") or d.get("task") not in TASKS:
            raise UserError(f"{where}: datasets[{i}] needs 'dataset' and 'task' (one of {', '.join(TASKS)}), "
                            f"got {d!r}")
        unknown = sorted(set(d) - {"dataset", "task", *SUITE_OPTIONS})
        if unknown:
            raise UserError(f"{where}: datasets[{i}] has unknown option(s) {', '.join(unknown)}; a dataset entry "
                            f"may set {', '.join(SUITE_OPTIONS)}")
    for i, m in enumerate(suite.get("models") or []):
        if not isinstance(m, dict) or not m.get("model"):
            raise UserError(f"{where}: models[{i}] needs 'model', got {m!r}")
    return suite


def run_suite(suite: dict | str, *, out: str, model: str | None = None, pretrained: str | None = None,
              device: str = "auto", **defaults) -> list[dict]:
    """Evaluate every model of a suite on every dataset of it; returns the results (see `run`).

    suite: a mapping `{"models": [{"model", "pretrained"?}], "datasets": [{"dataset", "task", ...options}]}`, or
        the URI of a YAML/JSON file holding one. A suite without models evaluates `model` / `pretrained`.
    out, device: as for `run`. defaults: keyword options of `run` (SUITE_OPTIONS) for every dataset; an entry's
        own options take precedence. Each model is loaded once.
    """
    suite = read_suite(suite) if isinstance(suite, str) else check_suite(suite)
    unknown = sorted(set(defaults) - set(SUITE_OPTIONS))
    if unknown:
        raise TypeError(f"run_suite() got unexpected keyword argument(s) {', '.join(unknown)}")
    models = suite.get("models") or ([{"model": model, "pretrained": pretrained}] if model else [])
    if not models:
        raise UserError("the suite lists no models: give one (--model) or add 'models' to the suite")
    device = default_device() if device == "auto" else device
    results = []
    for m in models:
        loaded = None
        for d in suite["datasets"]:
            options = defaults | {k: v for k, v in d.items() if k not in ("dataset", "task")}
            if loaded is None:
                loaded = load(m["model"], m.get("pretrained"), device)
            results.append(run(m["model"], d["dataset"], task=d["task"], out=out, pretrained=m.get("pretrained"),
                               device=device, loaded=loaded, **options))
    return results

