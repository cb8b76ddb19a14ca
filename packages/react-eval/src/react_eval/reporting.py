"""`react-eval report RESULTS_DIR... --html REPORT.html`: models × datasets tables and per-class bar charts,
in one self-contained page (matplotlib plots embedded as PNG data URIs)."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ._domainfiles import load_classes
from ._manifests import UserError, write_bytes_atomic
from .gate import main_metrics
from .results import read_results

CSS = ("body{font:14px system-ui,sans-serif;margin:24px}table{border-collapse:collapse;margin:8px 0 24px}"
       "td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child"
       "{text-align:left}.best{font-weight:700}img{max-width:100%}.target{color:#9a3412;font-weight:700}")
TARGET_COLOUR = "#9a3412"


def _path_tail(text: str, parts: int) -> str:
    """The last `parts` components of a path or URI ("" parts: the whole text)."""
    pieces = [p for p in text.rstrip("/").split("/") if p]
    return "/".join(pieces[-parts:]) if parts and pieces else text


def _is_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith((".safetensors", ".pt", ".pth", ".bin", ".ckpt"))


def _short_label(r: dict, parts: int) -> str:
    """A model's name in the report: open_clip `ARCH (tag)`, with a weights file by its file name; a loader's
    `KIND:SPEC` with SPEC's last path components (`react:pets`); `parts` = 0 keeps everything."""
    spec, pretrained = r.get("model_spec") or r["model"], r.get("pretrained") or ""
    if spec != r["model"]:  # a registered loader's KIND:SPEC
        kind, _, where = spec.partition(":")
        return f"{kind}:{_path_tail(where, parts)}" if _is_path(where) else spec
    weights = _path_tail(pretrained, parts) if _is_path(pretrained) else pretrained
    return f"{r['model']} ({weights or 'random'})"


def model_labels(results: list[dict]) -> dict[tuple, str]:
    """{model identity: its label}: short names (no absolute paths); models whose short names collide get more
    of their path, up to the whole of it, so two models never share a column."""
    identities = {}
    for r in results:
        identities.setdefault(_identity(r), r)
    labels: dict[tuple, str] = {}
    for parts in (1, 2, 3, 0):
        wanted = {i: _short_label(r, parts) for i, r in identities.items() if i not in labels}
        counts: dict[str, int] = {}
        for label in [*labels.values(), *wanted.values()]:
            counts[label] = counts.get(label, 0) + 1
        for i, label in wanted.items():
            if counts[label] == 1 or parts == 0:
                labels[i] = label
    taken: dict[str, int] = {}
    for i, label in labels.items():  # still equal with whole paths (e.g. one spec, two lineages): number them
        taken[label] = taken.get(label, 0) + 1
        if taken[label] > 1:
            labels[i] = f"{label} #{taken[label]}"
    return labels


def _identity(r: dict) -> tuple:
    return r["model"], r.get("pretrained") or "", r.get("model_spec") or r["model"]


def _bar_chart(classnames, series: dict[str, list[float]], title: str, target: frozenset = frozenset()) -> str:
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classnames) * max(1, len(series)) / 2), 3.2), dpi=100)
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(classnames)) + i * width, values, width, label=label)
    ax.set_xticks(np.arange(len(classnames)) + width * (len(series) - 1) / 2,
                  [f"{c} ★" if c in target else c for c in classnames], rotation=45, ha="right")
    for tick, name in zip(ax.get_xticklabels(), classnames, strict=True):
        if name in target:  # the target domain's classes, marked as in the page's legend
            tick.set_color(TARGET_COLOUR)
            tick.set_fontweight("bold")
    ax.set_ylim(0, 1)
    ax.set_ylabel("per-class recall")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _split_table(e, per_class: dict[str, dict], target: frozenset, models: list[str], title: dict) -> str:
    """Mean per-class recall over the target classes and over the rest, per model (what customization is for)."""
    classnames = set(next(iter(per_class.values())))
    inside, rest = sorted(classnames & target), sorted(classnames - target)
    if not inside:
        return ""
    head = "".join(f"<th title='{e(title[m])}'>{e(m)}</th>" for m in models)
    out = [f"<table><tr><th>mean per-class recall</th>{head}</tr>"]
    for name, group in ((f"<span class='target'>target ★</span> ({len(inside)} classes)", inside),
                        (f"rest ({len(rest)} classes)", rest)):
        if not group:
            continue
        cells = "".join("<td></td>" if m not in per_class else
                        f"<td>{100 * np.mean([per_class[m].get(c) or 0.0 for c in group]):.2f}</td>" for m in models)
        out.append(f"<tr><td>{name}</td>{cells}</tr>")
    return "".join(out) + "</table>"


def report(results_dirs, *, out: str, target_classes: str | None = None) -> str:
    """Write one self-contained HTML page for the results in `results_dirs` (folders or result files, react-eval's
    or CLIP_benchmark's): per task a table of the main metrics across models × datasets (best in bold) and
    per-class recall charts. Models are named by `model_labels` (no absolute paths). `target_classes` (a class
    file or built-in set: the domain a model was customized for) marks those classes ★ in the charts and adds a
    target-vs-rest table per dataset. Returns `out`."""
    folders = [results_dirs] if isinstance(results_dirs, str) else list(results_dirs)
    results = read_results(folders)
    if not results:
        raise UserError(f"no eval results (react-eval or CLIP_benchmark JSON files) in {', '.join(map(str, folders))}")
    e = html.escape
    target = frozenset(c.name for c in load_classes(target_classes)) if target_classes else frozenset()
    label_of = model_labels(results)
    models = sorted(set(label_of.values()))
    # the whole identity stays one hover away: model, weights, spec as given
    full = {label: " · ".join(dict.fromkeys(p for p in i if p)) for i, label in label_of.items()}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title><style>{CSS}"
             f"</style></head><body><h1>Evaluation report</h1><p>{len(results)} results, {len(models)} models."
             + (f" Target classes (★): <span class='target'>{e(', '.join(sorted(target)))}</span>." if target else "")
             + "</p>"]
    for task in sorted({r["task"] for r in results}):
        rows = [r for r in results if r["task"] == task]
        datasets = sorted({r["dataset"] for r in rows})
        metric_names = sorted({m for r in rows for m in main_metrics(r)})
        parts.append(f"<h2>{e(task)}</h2><table><tr><th>dataset / metric</th>"
                     + "".join(f"<th title='{e(full[m])}'>{e(m)}</th>" for m in models) + "</tr>")
        for d in datasets:
            for metric in metric_names:
                values = {label_of[_identity(r)]: r["metrics"].get(metric) for r in rows if r["dataset"] == d}
                if not any(v is not None for v in values.values()):
                    continue
                best = max(v for v in values.values() if v is not None)
                cells = "".join(
                    "<td></td>" if values.get(m) is None else
                    f"<td class='{'best' if values[m] == best else ''}'>{100 * values[m]:.2f}</td>" for m in models)
                parts.append(f"<tr><td>{e(d)} / {e(metric)}</td>{cells}</tr>")
        parts.append("</table>")
        for d in datasets:
            per_class = {label_of[_identity(r)]: r.get("details", {}).get("recall") for r in rows if r["dataset"] == d}
            per_class = {m: v for m, v in per_class.items() if v}
            if per_class:
                classnames = list(next(iter(per_class.values())))
                series = {m: [v.get(c) or 0.0 for c in classnames] for m, v in per_class.items()}
                if target:
                    parts.append(_split_table(e, per_class, target, models, full))
                parts.append(_bar_chart(classnames, series, f"{d}: {task}", target))
    parts.append("<script>window.addEventListener('load',()=>{document.body.dataset.imagesLoaded=[...document"
                 ".images].filter(i=>i.complete&&i.naturalWidth>0).length;});</script></body></html>")
    write_bytes_atomic(out, "".join(parts).encode())
    print(f"report -> {out}")
    return out
