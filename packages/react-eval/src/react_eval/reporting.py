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

from ._manifests import UserError, write_bytes_atomic
from .compare import main_metrics
from .run import read_results

CSS = ("body{font:14px system-ui,sans-serif;margin:24px}table{border-collapse:collapse;margin:8px 0 24px}"
       "td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child"
       "{text-align:left}.best{font-weight:700}img{max-width:100%}")


def _model_label(r: dict) -> str:
    return r["model_spec"] if r["model_spec"] != r["model"] else f"{r['model']} ({r['pretrained'] or 'random'})"


def _bar_chart(classnames, series: dict[str, list[float]], title: str) -> str:
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classnames) * max(1, len(series)) / 2), 3.2), dpi=100)
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(classnames)) + i * width, values, width, label=label)
    ax.set_xticks(np.arange(len(classnames)) + width * (len(series) - 1) / 2, classnames, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("per-class recall")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def report(folders, html_out: str) -> str:
    results = read_results(folders)
    if not results:
        raise UserError(f"no eval results (react-eval or CLIP_benchmark JSON files) in {', '.join(map(str, folders))}")
    e = html.escape
    models = sorted({_model_label(r) for r in results})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title><style>{CSS}"
             f"</style></head><body><h1>Evaluation report</h1><p>{len(results)} results, {len(models)} models.</p>"]
    for task in sorted({r["task"] for r in results}):
        rows = [r for r in results if r["task"] == task]
        datasets = sorted({r["dataset"] for r in rows})
        metric_names = sorted({m for r in rows for m in main_metrics(r)})
        parts.append(f"<h2>{e(task)}</h2><table><tr><th>dataset / metric</th>"
                     + "".join(f"<th>{e(m)}</th>" for m in models) + "</tr>")
        for d in datasets:
            for metric in metric_names:
                values = {_model_label(r): r["metrics"].get(metric) for r in rows if r["dataset"] == d}
                if not any(v is not None for v in values.values()):
                    continue
                best = max(v for v in values.values() if v is not None)
                cells = "".join(
                    "<td></td>" if values.get(m) is None else
                    f"<td class='{'best' if values[m] == best else ''}'>{100 * values[m]:.2f}</td>" for m in models)
                parts.append(f"<tr><td>{e(d)} / {e(metric)}</td>{cells}</tr>")
        parts.append("</table>")
        for d in datasets:
            per_class = {_model_label(r): r.get("details", {}).get("recall") for r in rows if r["dataset"] == d}
            per_class = {m: v for m, v in per_class.items() if v}
            if per_class:
                classnames = list(next(iter(per_class.values())))
                series = {m: [v.get(c) or 0.0 for c in classnames] for m, v in per_class.items()}
                parts.append(_bar_chart(classnames, series, f"{d}: {task}"))
    parts.append("<script>window.addEventListener('load',()=>{document.body.dataset.imagesLoaded=[...document"
                 ".images].filter(i=>i.complete&&i.naturalWidth>0).length;});</script></body></html>")
    write_bytes_atomic(html_out, "".join(parts).encode())
    print(f"report -> {html_out}")
    return html_out
