"""`react-eval compare BASE_DIR NEW_DIR`: per-dataset diff of the main metrics, the suite means, and the CI gate."""

from __future__ import annotations

import math

import fsspec

from .domain import dataset_key
from .results import read_results

MAIN_METRICS = {
    "zeroshot_classification": ("main_metric", "acc1"),
    "linear_probe": ("acc1",),
    "zeroshot_retrieval": ("image_retrieval_recall@5", "text_retrieval_recall@5"),
    "detection": ("AP50", "mean_per_class_top1"),
}
# A dataset's one score in a suite mean, per task: ELEVATER's per-dataset metric for classification (main_metric
# where the dataset defines one, else acc1) and linear probes (acc1); the mean of both recall@5 for retrieval;
# AP50 for detection.
SUITE_SCORE = {
    "zeroshot_classification": ("main_metric", "acc1"),
    "linear_probe": ("acc1",),
    "zeroshot_retrieval": ("image_retrieval_recall@5", "text_retrieval_recall@5"),
    "detection": ("AP50",),
}


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


def main_metrics(result: dict) -> dict[str, float]:
    """The main metrics of a result that compare diffs: {metric: value}, missing or NaN ones left out."""
    names = MAIN_METRICS.get(result["task"], ())
    if result["task"] == "zeroshot_classification":  # the dataset's own metric when it has one, else acc1
        names = names[:1] if _number(result["metrics"].get("main_metric")) else names[1:]
    return {n: result["metrics"][n] for n in names if _number(result["metrics"].get(n))}


def suite_score(result: dict, metric_names: tuple[str, ...] | None = None) -> tuple[tuple[str, ...], float] | None:
    """(metrics used, the dataset's score in a suite mean), or None when the result lacks them. `metric_names`
    forces the metrics (NEW is scored with the metrics BASE was scored with)."""
    if metric_names is None:
        names = SUITE_SCORE.get(result["task"], ())
        if result["task"] == "zeroshot_classification":
            names = names[:1] if _number(result["metrics"].get("main_metric")) else names[1:]
    else:
        names = metric_names
    values = [result["metrics"].get(n) for n in names]
    if not names or not all(_number(v) for v in values):
        return None
    return tuple(names), sum(values) / len(values)


def _side(folder: str, label: str, failures: list[str]) -> dict:
    """{(dataset key, task): result} of one side; a missing or empty side, or two results for one (dataset, task),
    is a failure."""
    fs, path = fsspec.core.url_to_fs(folder)
    if not fs.exists(path):
        failures.append(f"{label} {folder}: no such folder")
        return {}
    results = read_results([folder])
    if not results:
        failures.append(f"{label} {folder}: no results (react-eval or CLIP_benchmark JSON files)")
    by_key: dict = {}
    for r in results:
        by_key.setdefault((dataset_key(r["dataset"]), r["task"]), []).append(r)
    for (_, task), rs in by_key.items():
        if len(rs) > 1:
            names = " = ".join(sorted({r["dataset"] for r in rs}))
            failures.append(f"{names} / {task}: {label} {folder} holds {len(rs)} results ("
                            f"{', '.join(sorted(r['file'].rsplit('/', 1)[-1] for r in rs))}); compare one model per "
                            "folder")
    return {key: rs[0] for key, rs in by_key.items()}


def _suite_means(base: dict, new: dict, suite_max_drop: float, failures: list[str]) -> list[dict]:
    """One suite mean per task of BASE: the mean over BASE's datasets of each one's score (SUITE_SCORE), on both
    sides. A task whose datasets differ between the sides, or that lacks a score on either side, fails: a mean
    over other datasets is another number."""
    suites = []
    for task in sorted({t for _, t in base}):
        base_keys = sorted(k for k in base if k[1] == task)
        new_keys = sorted(k for k in new if k[1] == task)
        where = f"suite mean / {task}"
        missing = [base[k]["dataset"] for k in base_keys if k not in new]
        extra = [new[k]["dataset"] for k in new_keys if k not in base]
        if missing or extra:
            said = "; ".join(s for s in (f"not in NEW: {', '.join(missing)}" if missing else "",
                                         f"not in BASE: {', '.join(extra)}" if extra else "") if s)
            failures.append(f"{where}: the two sides evaluated different datasets ({said}); a mean over other "
                            "datasets is not comparable: evaluate both on the same suite")
            continue
        scores, unscored = [], []
        for k in base_keys:
            b = suite_score(base[k])
            n = suite_score(new[k], b[0]) if b else None
            if b is None or n is None:
                unscored.append(f"{base[k]['dataset']} ({'BASE' if b is None else 'NEW'})")
                continue
            scores.append((base[k]["dataset"], " + ".join(b[0]), b[1], n[1]))
        if unscored:
            failures.append(f"{where}: no score for {', '.join(unscored)} (wanted "
                            f"{' or '.join(SUITE_SCORE.get(task, ())) or 'a task react-eval does not compare'})")
            continue
        b_mean = sum(s[2] for s in scores) / len(scores)
        n_mean = sum(s[3] for s in scores) / len(scores)
        delta = 100 * (n_mean - b_mean)
        suites.append({"task": task, "datasets": [s[0] for s in scores], "metrics": [s[1] for s in scores],
                       "base": b_mean, "new": n_mean, "delta": delta})
        if delta < -suite_max_drop:
            failures.append(f"{where}: dropped {-delta:.2f} pt over {len(scores)} datasets (limit {suite_max_drop})")
    if not suites and not any(f.startswith("suite mean /") for f in failures):
        failures.append("suite mean: nothing was compared (no task with results on both sides)")
    return suites


def compare(base_dir: str, new_dir: str, *, max_drop: float = 0.5, min_gain: float | None = None,
            suite_mean: bool = False, suite_max_drop: float = 0.5) -> dict:
    """Diff the results in `new_dir` against those in `base_dir`: the CI gate.

    Returns {"rows": [(dataset, task, metric, base, new, delta in points)], "suites": [{"task", "datasets",
    "metrics", "base", "new", "delta"}] (with `suite_mean`), "failures": [str]}; the gate passed when
    "failures" is empty. Results pair by (dataset, task), dataset names compared by `dataset_key`.

    Failures: a side missing or empty, nothing compared, a (dataset, task) of BASE missing from NEW or without a
    main metric, results on different data (dataset checksums differ), a drop past `max_drop` points, a gain below
    `min_gain` points when given. With `suite_mean`, also per task: the mean over the suite's datasets (every
    dataset of that task in BASE, each scored by its main metric, ELEVATER's average) dropping past
    `suite_max_drop` points, or the two sides holding different datasets. Both sides may hold react-eval or
    CLIP_benchmark result files.
    """
    failures: list[str] = []
    base = _side(base_dir, "BASE", failures)
    new = _side(new_dir, "NEW", failures)
    rows = []
    for key in sorted(base):
        where = f"{base[key]['dataset']} / {key[1]}"
        if key not in new:
            failures.append(f"{where}: no result in {new_dir}")
            continue
        b_sum, n_sum = base[key].get("dataset_checksum"), new[key].get("dataset_checksum")
        if b_sum and n_sum and b_sum.split(":")[0] != n_sum.split(":")[0]:
            failures.append(f"{where}: the dataset was fingerprinted two ways ({b_sum.split(':')[0]} in BASE, "
                            f"{n_sum.split(':')[0]} in NEW: results of different react-eval versions); re-run "
                            "BASE with this react-eval to compare")
            continue
        if b_sum and n_sum and b_sum != n_sum:
            failures.append(f"{where}: evaluated on different data (dataset_checksum {b_sum[:15]}… in BASE, "
                            f"{n_sum[:15]}… in NEW); evaluate both on the same dataset with the same react-eval")
            continue
        metrics = main_metrics(base[key])
        if not metrics:
            wanted = ", ".join(MAIN_METRICS.get(key[1], ())) or "a task react-eval does not compare"
            failures.append(f"{where}: BASE has no main metric to compare (wanted {wanted}; it has "
                            f"{', '.join(base[key]['metrics']) or 'none'})")
        for metric, b in metrics.items():
            n = new[key]["metrics"].get(metric)
            if not _number(n):
                failures.append(f"{where} / {metric}: missing in {new_dir}")
                continue
            delta = 100 * (n - b)
            rows.append((base[key]["dataset"], key[1], metric, b, n, delta))
            if delta < -max_drop:
                failures.append(f"{where} / {metric}: dropped {-delta:.2f} pt (limit {max_drop})")
            elif min_gain is not None and delta < min_gain:
                failures.append(f"{where} / {metric}: gained {delta:.2f} pt (< {min_gain} required)")
    if not rows:
        failures.append("nothing was compared: no (dataset, task) with a main metric on both sides")
    verdict = {"rows": rows, "failures": failures}
    if suite_mean:
        verdict["suites"] = _suite_means(base, new, suite_max_drop, failures)
    return verdict


def format_table(rows, suites=None) -> str:
    """The comparison as a text table (values in %, Δ in points); suite means below the rows."""
    lines = [f"{'dataset':<24}{'task':<26}{'metric':<28}{'base':>8}{'new':>8}{'Δ pt':>8}"]
    lines += [f"{d:<24}{t:<26}{m:<28}{100 * b:>8.2f}{100 * n:>8.2f}{delta:>+8.2f}" for d, t, m, b, n, delta in rows]
    for s in suites or ():
        label = f"suite mean ({len(s['datasets'])})"
        lines.append(f"{label:<24}{s['task']:<26}{'main metric per dataset':<28}{100 * s['base']:>8.2f}"
                     f"{100 * s['new']:>8.2f}{s['delta']:>+8.2f}")
    return "\n".join(lines)
