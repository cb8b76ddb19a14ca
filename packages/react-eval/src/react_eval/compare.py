"""`react-eval compare BASE_DIR NEW_DIR`: per-dataset diff of the main metrics, and the CI gate."""

from __future__ import annotations

from .run import read_results

MAIN_METRICS = {
    "zeroshot_classification": ("main_metric", "acc1"),
    "linear_probe": ("acc1",),
    "zeroshot_retrieval": ("image_retrieval_recall@5", "text_retrieval_recall@5"),
    "detection": ("AP50", "mean_per_class_top1"),
}


def main_metrics(result: dict) -> dict[str, float]:
    names = MAIN_METRICS.get(result["task"], ())
    if result["task"] == "zeroshot_classification":  # the dataset's own metric when it has one, else acc1
        names = names[:1] if "main_metric" in result["metrics"] else names[1:]
    return {n: result["metrics"][n] for n in names if result["metrics"].get(n) is not None}


def compare(base_dir: str, new_dir: str, max_drop: float = 0.5, min_gain: float | None = None):
    """(rows, failures): rows of (dataset, task, metric, base, new, delta in points); a failure is a drop past
    `max_drop` points, or a gain below `min_gain` points when given, or a result missing from NEW_DIR."""
    base = {(r["dataset"], r["task"]): r for r in read_results([base_dir])}
    new = {(r["dataset"], r["task"]): r for r in read_results([new_dir])}
    rows, failures = [], []
    for key in sorted(base):
        if key not in new:
            failures.append(f"{key[0]} / {key[1]}: no result in {new_dir}")
            continue
        for metric, b in main_metrics(base[key]).items():
            n = new[key]["metrics"].get(metric)
            if n is None:
                failures.append(f"{key[0]} / {key[1]} / {metric}: missing in {new_dir}")
                continue
            delta = 100 * (n - b)
            rows.append((key[0], key[1], metric, b, n, delta))
            if delta < -max_drop:
                failures.append(f"{key[0]} / {key[1]} / {metric}: dropped {-delta:.2f} pt (limit {max_drop})")
            elif min_gain is not None and delta < min_gain:
                failures.append(f"{key[0]} / {key[1]} / {metric}: gained {delta:.2f} pt (< {min_gain} required)")
    return rows, failures


def format_table(rows) -> str:
    lines = [f"{'dataset':<24}{'task':<26}{'metric':<28}{'base':>8}{'new':>8}{'Δ pt':>8}"]
    lines += [f"{d:<24}{t:<26}{m:<28}{100 * b:>8.2f}{100 * n:>8.2f}{delta:>+8.2f}" for d, t, m, b, n, delta in rows]
    return "\n".join(lines)
