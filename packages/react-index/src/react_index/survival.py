"""What a download kept: rows and samples per class before and after, failures per reason and per class.

Shared by `react-index download` and `attach` (which compute it), `info` and `inspect` (which show it).
The numbers live in the retrieval manifest's optional `download` and `survival` fields (docs/manifests.md).
"""

from __future__ import annotations

import html

import numpy as np

DEFAULT_MIN_SURVIVAL = 0.5


def per_class_samples(class_index: np.ndarray, sample_id: np.ndarray, n_classes: int) -> np.ndarray:
    """Distinct samples per class."""
    if len(class_index) == 0:
        return np.zeros(n_classes, np.int64)
    pairs = np.unique(np.stack([class_index.astype(np.int64), sample_id.astype(np.int64)]), axis=1)
    return np.bincount(pairs[0], minlength=n_classes)


def survival(classes: list[str], class_index: np.ndarray, sample_id: np.ndarray, kept: np.ndarray,
             min_survival: float = DEFAULT_MIN_SURVIVAL) -> dict:
    """The manifest's `survival` field: rows and distinct samples per class before and after (lists aligned with
    `classes`), and the classes that kept less than `min_survival` of their rows."""
    n = len(classes)
    rows_before = np.bincount(class_index, minlength=n)
    rows_after = np.bincount(class_index[kept], minlength=n)
    below = [c for c, b, a in zip(classes, rows_before.tolist(), rows_after.tolist(), strict=True)
             if b and a < min_survival * b]
    return {"rows_before": rows_before.tolist(), "rows_after": rows_after.tolist(),
            "samples_before": per_class_samples(class_index, sample_id, n).tolist(),
            "samples_after": per_class_samples(class_index[kept], sample_id[kept], n).tolist(),
            "min_survival": float(min_survival), "below": below}


def failures_per_class(class_index: np.ndarray, reason_code: np.ndarray, reasons: list[str], n_classes: int) \
        -> list[dict]:
    """Rows lost per class and reason: `reason_code` is an index into `reasons` per row, -1 for a kept row."""
    lost = reason_code >= 0
    out = [{} for _ in range(n_classes)]
    if not lost.any():
        return out
    keys = class_index[lost].astype(np.int64) * len(reasons) + reason_code[lost]
    values, counts = np.unique(keys, return_counts=True)
    for key, count in zip(values.tolist(), counts.tolist(), strict=True):
        out[key // len(reasons)][reasons[key % len(reasons)]] = count
    return out


def _share(after: int, before: int) -> str:
    return f"{after / before:.0%}" if before else "-"


def _reasons(counts: dict, limit: int = 6) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{k} {v:,}" for k, v in items[:limit])
    return text + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def summary_lines(doc: dict, worst: int = 5) -> list[str]:
    """Human lines for a retrieval manifest with `download`/`survival` fields (none when it has neither)."""
    lines = []
    d = doc.get("download")
    if d:
        s = d["samples"]
        lines.append(f"  download   {d['tool']}: {s['downloaded']:,} downloaded, {s['copied']:,} copied, "
                     f"{s['failed']:,} failed of {s['requested'] + s['copied']:,} samples"
                     + (f" ({s['retryable']:,} retryable by a rerun)" if s["retryable"] else ""))
        if d["failures"]:
            lines.append(f"  failures   {_reasons(d['failures'])}")
    sv = doc.get("survival")
    if sv:
        before, after = np.array(sv["rows_before"]), np.array(sv["rows_after"])
        share = np.where(before > 0, after / np.maximum(before, 1), 1.0)
        if len(share):
            lines.append(f"  survival   rows {int(after.sum()):,} of {int(before.sum()):,} "
                         f"({_share(int(after.sum()), int(before.sum()))}); per class min {share.min():.0%}, "
                         f"median {float(np.median(share)):.0%}")
            for i in np.argsort(share, kind="stable")[:worst]:
                if share[i] >= 1.0:
                    break
                lost = d["failures_per_class"][i] if d and i < len(d.get("failures_per_class", [])) else {}
                lines.append(f"    {doc['classes'][i]}: {after[i]:,} of {before[i]:,} rows "
                             f"({_share(int(after[i]), int(before[i]))})" + (f"; lost: {_reasons(lost, 3)}"
                                                                             if lost else ""))
        if sv["below"]:
            lines.append(f"  warning    {len(sv['below'])} class(es) kept less than {sv['min_survival']:.0%} of their "
                         f"rows: {', '.join(sv['below'][:10])}" + (" …" if len(sv["below"]) > 10 else ""))
    return lines


def html_table(doc: dict) -> str:
    """The survival table for `react-index inspect` (empty when the set was not downloaded)."""
    sv, d = doc.get("survival"), doc.get("download")
    if not sv:
        return ""
    e = html.escape
    per_class = (d or {}).get("failures_per_class") or [{}] * len(doc["classes"])
    parts = ["<h2>Download survival</h2>"]
    if d:
        s = d["samples"]
        parts.append(f"<p>{e(d['tool'])}: {s['downloaded']:,} downloaded, {s['copied']:,} copied, {s['failed']:,} "
                     f"failed ({e(_reasons(d['failures'], 20)) or 'none'}).</p>")
    parts.append(f"<p>Classes keeping less than {sv['min_survival']:.0%} of their rows are flagged: "
                 f"<span class='flag'>{e(', '.join(sv['below'])) or 'none'}</span></p>")
    parts.append("<table id='survival'><tr><th>class</th><th>rows before</th><th>rows after</th><th>kept</th>"
                 "<th>samples before</th><th>samples after</th><th>lost to</th></tr>")
    for i, c in enumerate(doc["classes"]):
        b, a = sv["rows_before"][i], sv["rows_after"][i]
        flag = " class='flag'" if c in sv["below"] else ""
        parts.append(f"<tr><td{flag}>{e(c)}</td><td>{b:,}</td><td>{a:,}</td><td{flag}>{_share(a, b)}</td>"
                     f"<td>{sv['samples_before'][i]:,}</td><td>{sv['samples_after'][i]:,}</td>"
                     f"<td>{e(_reasons(per_class[i], 4))}</td></tr>")
    parts.append("</table>")
    return "".join(parts)
