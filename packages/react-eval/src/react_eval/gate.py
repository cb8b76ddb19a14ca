"""`react-eval compare BASE_DIR NEW_DIR`: per-dataset diff of the main metrics, and the CI gate."""

from __future__ import annotations

import math

import fsspec

from .run import read_results

MAIN_METRICS = {
    "zeroshot_classification": ("main_metric", "acc1"),
    "linear_probe": ("acc1",),
    "zeroshot_retrieval": ("image_retrieval_recall@5", "text_retrieval_recall@5"),
    "detection": ("AP50", "mean_per_class_top1"),
}


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


def main_metrics(result: dict) -> dict[str, float]:
    names = MAIN_METRICS.get(result["task"], ())
    if result["task"] == "zeroshot_classification":  # the dataset's own metric when it has one, else acc1
        names = names[:1] if _number(result["metrics"].get("main_metric")) else names[1:]
    return {n: result["metrics"][n] for n in names if _number(result["metrics"].get(n))}


def _side(folder: str, label: str, failures: list[str]) -> dict:
    """{(dataset, task): result} of one side; a missing or empty side, or two results for one (dataset, task),
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
        by_key.setdefault((r["dataset"], r["task"]), []).append(r)
    for (dataset, task), rs in by_key.items():
        if len(rs) > 1:
            failures.append(f"{dataset} / {task}: {label} {folder} holds {len(rs)} results ("
                            f"{', '.join(sorted(r['file'].rsplit('/', 1)[-1] for r in rs))}); compare one model per "
                            "folder")
    return {key: rs[0] for key, rs in by_key.items()}


def compare(base_dir: str, new_dir: str, max_drop: float = 0.5, min_gain: float | None = None):
    """(rows, failures): rows of (dataset, task, metric, base, new, delta in points). Failures: a side missing or
    empty, nothing compared, a (dataset, task) of BASE_DIR missing from NEW_DIR or without a main metric, results
    on different data (dataset checksums differ), a drop past `max_drop` points, a gain below `min_gain` points
    when given. Both sides may hold react-eval or CLIP_benchmark result files."""
    failures: list[str] = []
    base = _side(base_dir, "BASE", failures)
    new = _side(new_dir, "NEW", failures)
    rows = []
    for key in sorted(base):
        where = f"{key[0]} / {key[1]}"
        if key not in new:
            failures.append(f"{where}: no result in {new_dir}")
            continue
        b_sum, n_sum = base[key].get("dataset_checksum"), new[key].get("dataset_checksum")
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
            rows.append((key[0], key[1], metric, b, n, delta))
            if delta < -max_drop:
                failures.append(f"{where} / {metric}: dropped {-delta:.2f} pt (limit {max_drop})")
            elif min_gain is not None and delta < min_gain:
                failures.append(f"{where} / {metric}: gained {delta:.2f} pt (< {min_gain} required)")
    if not rows:
        failures.append("nothing was compared: no (dataset, task) with a main metric on both sides")
    return rows, failures


def format_table(rows) -> str:
    lines = [f"{'dataset':<24}{'task':<26}{'metric':<28}{'base':>8}{'new':>8}{'Δ pt':>8}"]
    lines += [f"{d:<24}{t:<26}{m:<28}{100 * b:>8.2f}{100 * n:>8.2f}{delta:>+8.2f}" for d, t, m, b, n, delta in rows]
    return "\n".join(lines)
