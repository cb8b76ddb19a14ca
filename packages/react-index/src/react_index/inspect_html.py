"""`react-index inspect`: a self-contained HTML page to eyeball a retrieval set.

Per class: the top images (thumbnails embedded as data URIs), captions and scores, and a score
histogram; overall: rows per class, duplicates across classes, and classes with too few hits
flagged. Thumbnails need Pillow (the [clip] extra); without it the original bytes are embedded.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._imagerows import UrlOnlyRow, decode_rgb
from ._manifests import write_bytes_atomic
from .manifest import read_retrieval_manifest
from .materialize import image_extension, read_image

MIME = {"jpg": "jpeg", "img": "jpeg"}


def thumbnail(data: bytes, size: int = 128) -> str:
    """A data URI: a JPEG thumbnail when Pillow is installed, else the image as it is."""
    try:
        import PIL  # noqa: F401  (the [clip] extra)
    except ImportError:
        ext = image_extension(data)
    else:
        img = decode_rgb(data, "thumbnail")  # 16-bit images keep their tones instead of turning white
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        data, ext = buf.getvalue(), "jpg"
    return f"data:image/{MIME.get(ext, ext)};base64,{base64.b64encode(data).decode()}"


def histogram_svg(scores: np.ndarray, lo: float, hi: float, bins: int = 20, width: int = 220, height: int = 60) -> str:
    """Bars of the score distribution over [lo, hi]; when every score is equal (a zero range), one bar."""
    scores = np.asarray(scores, dtype=np.float64)
    if hi - lo > 1e-9 * max(1.0, abs(lo)):
        counts, _ = np.histogram(scores, bins=bins, range=(lo, hi))
    else:  # numpy cannot cut a zero-width range into bins
        counts = np.zeros(bins, np.int64)
        counts[bins // 2] = len(scores)
    top = max(int(counts.max()), 1)
    left, bottom = 34, 30  # room for the y axis (rows) and the x axis (score) with their labels
    bar = width / bins
    rects = "".join(f'<rect x="{left + i * bar:.1f}" y="{height - height * c / top:.1f}" width="{bar - 1:.1f}" '
                    f'height="{height * c / top:.1f}"/>' for i, c in enumerate(counts))
    ticks = "".join(f'<line x1="{left + x:.1f}" y1="{height}" x2="{left + x:.1f}" y2="{height + 4}"/>'
                    f'<text x="{left + x:.1f}" y="{height + 14}" text-anchor="middle" stroke="none">{v:.3f}</text>'
                    for x, v in ((0, lo), (width / 2, (lo + hi) / 2), (width, hi)))
    axes = (f'<g stroke="#444"><line x1="{left}" y1="0" x2="{left}" y2="{height}"/>'
            f'<line x1="{left}" y1="{height}" x2="{left + width}" y2="{height}"/>'
            f'<line x1="{left - 4}" y1="0" x2="{left}" y2="0"/></g>')
    labels = (f'<text x="{left - 6}" y="8" text-anchor="end">{top}</text>'
              f'<text x="{left - 6}" y="{height}" text-anchor="end">0</text>'
              f'<text x="{left - 24}" y="{height / 2:.0f}" text-anchor="middle" '
              f'transform="rotate(-90 {left - 24} {height / 2:.0f})">rows</text>'
              f'<text x="{left + width / 2:.0f}" y="{height + bottom - 2}" text-anchor="middle">score</text>')
    return (f'<svg class="hist" width="{left + width + 20}" height="{height + bottom}" role="img" '
            f'aria-label="score histogram: rows per score bin">'
            f'<g fill="#4a7bd0">{rects}</g><g stroke="#444">{ticks}</g>{axes}{labels}</svg>')


CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}h2{margin:28px 0 6px}
.grid{display:flex;flex-wrap:wrap;gap:8px}.cell{width:140px}.cell img{width:128px;height:128px;object-fit:contain;
background:#eee;display:block}.cap{font-size:11px;color:#555;overflow-wrap:anywhere;max-height:4.2em;overflow:hidden}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}
.flag{color:#b00;font-weight:600}.ok{color:#286028}
.note{background:#fff6dd;border:1px solid #e0c870;padding:8px 12px}
.missing{width:128px;height:128px;background:#eee;font-size:11px;color:#555;display:flex;align-items:center;
justify-content:center;text-align:center;padding:4px;box-sizing:border-box}
.bar{background:#4a7bd0;height:10px;display:inline-block}.hist text{font-size:10px}"""

ONLOAD = """<script>window.addEventListener('load',()=>{const ok=[...document.images].filter(
i=>i.complete&&i.naturalWidth>0).length;document.body.dataset.imagesLoaded=ok;const n=document.images.length;
if(n)document.getElementById('loaded').textContent=ok+' of '+n+' embedded images rendered by this browser.';});
</script>"""


def inspect(retrieval: str, out: str, *, per_class: int = 12, min_hits: int | None = None) -> dict:
    """Write a self-contained HTML gallery of the retrieval set `retrieval` to `out`: per class its row count,
    score histogram and `per_class` thumbnails; classes with fewer than `min_hits` rows (default: a quarter of the
    median) are flagged. Returns its statistics (rows per class, duplicates, flagged classes, images shown and not
    shown). `react-index inspect` runs this."""
    doc = read_retrieval_manifest(retrieval)
    table = pq.read_table(doc["rows_uri"])
    counts = np.array(doc["counts_per_class"])
    median = float(np.median(counts)) if len(counts) else 0.0
    threshold = min_hits if min_hits is not None else max(1, int(0.25 * median))
    flagged = [c for c, n in zip(doc["classes"], counts, strict=True) if n < threshold]
    sample_ids = np.asarray(table.column("sample_id"))
    _, per_sample = np.unique(sample_ids, return_counts=True)
    shared = int((per_sample > 1).sum())
    scores = np.asarray(table.column("score"), dtype=np.float64)
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Retrieval set: {e(doc['rows_file'])}</title>"
             f"<style>{CSS}</style></head><body data-images-loaded='0'>",
             f"<h1>Retrieval set {e(doc['rows_file'])}</h1><p>{len(doc['classes'])} classes, {doc['rows']:,} rows, "
             f"{doc['unique_samples']:,} unique samples; mode {e(doc['mode'])}, k {doc['k']}; model "
             f"{e(doc['model']['name'])}. Duplicates across classes: {shared:,} samples appear in more than one "
             f"class. <span id='loaded'></span></p>",
             "<!--SHOWN-->",
             f"<p>Classes with fewer than {threshold} rows are flagged: "
             + (f"<span class='flag'>{e(', '.join(flagged))}</span>" if flagged else "<span class='ok'>none</span>")
             + "</p>",
             "<table><tr><th>class</th><th>rows</th><th></th></tr>"]
    top = max(int(counts.max()), 1) if len(counts) else 1
    for c, n in zip(doc["classes"], counts, strict=True):
        flag = " class='flag'" if c in flagged else ""
        parts.append(f"<tr><td{flag}>{e(c)}</td><td>{n}</td><td><span class='bar' "
                     f"style='width:{200 * n / top:.0f}px'></span></td></tr>")
    parts.append("</table>")
    from .survival import html_table

    shown, url_only, unavailable = 0, 0, {}

    parts.append(html_table(doc))  # after `react-index download` / `attach`: rows kept per class, failures
    for i, c in enumerate(doc["classes"]):
        rows = table.filter(pc.equal(table.column("class_index"), i))
        parts.append(f"<h2>{e(c)} <small>({rows.num_rows} rows)</small></h2>")
        parts.append(histogram_svg(np.asarray(rows.column("score")), lo, hi))
        parts.append("<div class='grid'>")
        for r in rows.sort_by("rank").slice(0, per_class).to_pylist():
            try:
                src = thumbnail(read_image(r))
                img = f"<img src='{src}' alt='{e(r['key'] or '')}'>"
                shown += 1
            except UrlOnlyRow:  # a set from URL metadata (LAION): nothing to show until it is downloaded
                url_only += 1
                img = f"<div class='missing' title='{e(r['url'] or '')}'>not downloaded: known only by its URL</div>"
            except Exception as err:  # a missing image is shown, not fatal
                unavailable[type(err).__name__] = unavailable.get(type(err).__name__, 0) + 1
                img = f"<div class='missing' title='{e(str(err))}'>image unavailable (hover for why)</div>"
            parts.append(f"<div class='cell'>{img}<div class='cap'>#{r['rank']} · {r['score']:.3f}<br>"
                         f"{e(r['caption'] or '')}</div></div>")
        parts.append("</div>")
    parts.append(ONLOAD + "</body></html>")
    not_shown = url_only + sum(unavailable.values())
    status = f"{shown} of {shown + not_shown} images shown."
    fix = ""
    if url_only:
        folder = doc["rows_file"].removesuffix(".parquet") + "-images"
        page = out.rsplit("/", 1)[-1]
        fix = (f"react-index download {retrieval} --out {folder} && react-index inspect {folder}/{doc['rows_file']} "
               f"--out {page}")
        status += (f" {url_only} could not be shown: their rows are known only by their URL (a set made from URL "
                   f"metadata such as LAION's), so there is no image to show until they are downloaded. To see "
                   f"them, download the set and inspect the downloaded one:<br><code>{e(fix)}</code>")
    if unavailable:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(unavailable.items()))
        status += (f" {sum(unavailable.values())} could not be read ({reasons}): the corpus moved or changed since "
                   "the set was made; hover over a grey box for the file and the reason.")
    parts[parts.index("<!--SHOWN-->")] = f"<p class='note'>{status}</p>" if not_shown else f"<p>{status}</p>"
    write_bytes_atomic(out, "".join(parts).encode())
    print(f"report -> {out}  ({status.split('<br>')[0]})")
    if fix:
        print(f"  to see them: {fix}")
    return {"counts_per_class": counts.tolist(), "flagged": flagged, "shared_samples": shared, "shown": shown,
            "url_only": url_only, "unavailable": sum(unavailable.values())}
