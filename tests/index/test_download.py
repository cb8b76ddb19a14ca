"""`react-index download` against a real HTTP server on 127.0.0.1 that fails in every way the web does:
exact counts per reason and per class, retries, resume that refetches only what failed transiently."""

import io
import json
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image
from urlserver import UrlServer

from react_index._imagerows import read_image_bytes
from react_index._manifests import MissingExtraError, read_retrieval_manifest
from react_index.cli import main
from react_index.download import DownloadOptions, download, prepare
from react_index.info import describe
from react_index.inspect_html import inspect
from react_index.manifest import write_retrieval_manifest

CLASSES = ["star", "ring", "moon"]


def _jpeg(w, h, colour, quality=90) -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", (w, h), colour)
    for x in range(0, w, 8):  # some texture, so resizing has something to do
        img.paste((255 - colour[0], colour[1], 255 - colour[2]), (x, 0, x + 4, h))
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _png(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


IMAGES = {"a.jpg": _jpeg(64, 48, (200, 20, 20)), "a2.jpg": _jpeg(48, 64, (20, 200, 20)),
          "b.jpg": _jpeg(80, 60, (20, 20, 200)), "c.jpg": _jpeg(64, 64, (90, 90, 20)),
          "d.jpg": _jpeg(40, 40, (200, 200, 20)), "e.png": _png(30, 50), "f.jpg": _jpeg(64, 32, (0, 120, 200))}
IMAGES["bad.jpg"] = IMAGES["b.jpg"][:200] + b"\0" * 300  # a JPEG header, then garbage: corrupt


def rows_table(spec: list[tuple[int, str, str | None, str | None]]) -> pa.Table:
    """Retrieval rows from (sample id, class, url, image file) tuples."""
    rank = {}
    ranks = []
    for _, c, _, _ in spec:
        ranks.append(rank.setdefault(c, 0))
        rank[c] += 1
    return pa.table({
        "class_name": [c for _, c, _, _ in spec],
        "class_index": pa.array([CLASSES.index(c) for _, c, _, _ in spec], pa.int32()),
        "templates": [["a photo of a {c}."]] * len(spec),
        "rank": pa.array(ranks, pa.int32()),
        "score": pa.array([0.5] * len(spec), pa.float32()),
        "sample_id": pa.array([s for s, _, _, _ in spec], pa.int64()),
        "key": [f"k{s}" for s, _, _, _ in spec],
        "caption": [f"a {c} number {s}" for s, c, _, _ in spec],
        "image_uri": pa.array([f for _, _, _, f in spec], pa.string()),
        "image_offset": pa.array([None] * len(spec), pa.int64()),
        "image_length": pa.array([None] * len(spec), pa.int64()),
        "url": pa.array([u for _, _, u, _ in spec], pa.string()),
    })


def write_set(folder, table: pa.Table, name: str = "set.parquet"):
    """A URL-only retrieval set as `react-index query` writes one (rows + sidecar)."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)
    ids = np.asarray(table.column("sample_id"))
    body = {"model": {"name": "react-tiny-vit", "pretrained": "", "pretrained_sha256": None}, "mode": "t2i", "k": 6,
            "selection": {"per": "template"}, "classes": CLASSES, "templates": ["a photo of a {c}."],
            "counts_per_class": np.bincount(np.asarray(table.column("class_index")), minlength=3).tolist(),
            "unique_samples": len(np.unique(ids))}
    write_retrieval_manifest(str(folder / name), body, [])
    return folder / name


@pytest.fixture()
def server():
    with UrlServer(IMAGES) as s:
        yield s


@pytest.fixture()
def hostile_set(server, tmp_path):
    """Every failure the web has, spread over three classes; one sample already on disk; one URL shared by two
    samples; one sample retrieved for two classes."""
    local = tmp_path / "local.jpg"
    local.write_bytes(_jpeg(20, 20, (1, 2, 3)))
    u = server.url
    spec = [
        (0, "star", u("/img/a.jpg"), None),           # ok
        (1, "star", u("/status/404/x"), None),        # http_404, permanent
        (2, "star", u("/flaky/1/b.jpg"), None),       # 500 once, then ok (a retry)
        (3, "star", u("/slow/3/c.jpg"), None),        # timeout, retried
        (4, "star", UrlServer.refused_url(), None),   # refused, retried
        (5, "star", u("/redirect/a2.jpg"), None),     # 302 -> ok
        (6, "ring", u("/text/x"), None),              # not_an_image, permanent
        (7, "ring", u("/truncated/b.jpg"), None),     # truncated, retried
        (8, "ring", u("/huge/x"), None),              # too_large (Content-Length), permanent
        (9, "ring", u("/status/410/x"), None),        # http_410, permanent
        (10, "ring", u("/down/d.jpg"), None),         # http_500 while the server is down: transient
        (11, "ring", u("/img/e.png"), None),          # ok, a PNG kept as PNG
        (12, "moon", u("/img/f.jpg"), None),          # ok
        (13, "moon", u("/img/a.jpg"), None),          # the same URL as sample 0: fetched once
        (0, "moon", u("/img/a.jpg"), None),           # sample 0 retrieved for a second class
        (14, "moon", u("/stream/2000000/x"), None),   # too_large while reading (no Content-Length)
        (15, "moon", None, str(local)),               # already on disk: copied
        (16, "moon", u("/img/bad.jpg"), None),        # corrupt_image, permanent
    ]
    return write_set(tmp_path / "set", rows_table(spec))


OPTS = dict(timeout=1.0, retries=1, backoff=0.05, concurrency=8, per_host=4, max_bytes=1_000_000,
            samples_per_shard=5, progress=False)
FAILURES = {"corrupt_image": 1, "http_404": 1, "http_410": 1, "http_500": 1, "not_an_image": 1, "refused": 1,
            "timeout": 1, "too_large": 2, "truncated": 1}


def _set_rows(doc) -> list[dict]:
    return pq.read_table(doc["rows_uri"]).to_pylist()


def test_every_failure_is_counted_per_reason_and_per_class_and_never_stops_the_run(hostile_set, server, tmp_path,
                                                                                     capsys):
    doc = download(str(hostile_set), str(tmp_path / "out"), options=DownloadOptions(**OPTS))
    printed = capsys.readouterr().out
    d = doc["download"]
    assert d["failures"] == FAILURES
    assert d["samples"] == {"requested": 16, "downloaded": 6, "copied": 1, "failed": 10, "retryable": 4}
    assert d["failures_per_class"] == [
        {"http_404": 1, "timeout": 1, "refused": 1},
        {"not_an_image": 1, "truncated": 1, "too_large": 1, "http_410": 1, "http_500": 1},
        {"too_large": 1, "corrupt_image": 1}]
    assert doc["survival"] == {"rows_before": [6, 6, 6], "rows_after": [3, 1, 4],
                               "samples_before": [6, 6, 6], "samples_after": [3, 1, 4],
                               "min_survival": 0.5, "below": ["ring"]}
    assert doc["counts_per_class"] == [3, 1, 4] and doc["rows"] == 8 and doc["unique_samples"] == 7
    assert doc["lineage"][0]["kind"] == "react.retrieval"
    assert "http_404 1" in printed and "too_large 2" in printed and "ring" in printed and "warning" in printed
    # requests: one per URL (shared URL fetched once), retries only for transient failures, none for permanent
    assert server.counts["/img/a.jpg"] == 1 and server.counts["/status/404/x"] == 1
    assert server.counts["/flaky/1/b.jpg"] == 2 and server.counts["/slow/3/c.jpg"] == 2
    assert server.counts["/truncated/b.jpg"] == 2 and server.counts["/down/d.jpg"] == 2
    assert server.counts["/text/x"] == server.counts["/huge/x"] == server.counts["/img/bad.jpg"] == 1
    # the set is trainable: every row points at a tar member holding exactly the served (verified) bytes
    read_retrieval_manifest(doc["rows_uri"], reader="test")
    rows = {(r["class_name"], r["sample_id"]): r for r in _set_rows(doc)}
    assert set(rows) == {("star", 0), ("star", 2), ("star", 5), ("ring", 11), ("moon", 12), ("moon", 13),
                         ("moon", 0), ("moon", 15)}
    served = {0: "a.jpg", 2: "b.jpg", 5: "a2.jpg", 11: "e.png", 12: "f.jpg", 13: "a.jpg"}
    for (_, sid), r in rows.items():
        data = read_image_bytes(r["image_uri"], r["image_offset"], r["image_length"])
        assert data == (IMAGES[served[sid]] if sid in served else (tmp_path / "local.jpg").read_bytes())
        assert r["url"] is None or r["url"].startswith("http://127.0.0.1")
    assert rows[("moon", 13)]["image_offset"] == rows[("moon", 0)]["image_offset"]  # same URL, same member
    names = []
    for shard in sorted((tmp_path / "out").glob("*.tar")):
        with tarfile.open(shard) as tar:
            names += tar.getnames()
    assert sorted(n for n in names if n.endswith(".png")) == ["000000000011.png"]
    assert len(names) == 3 * 6  # sample 13 shares sample 0's member
    assert "survival" in describe(doc["rows_uri"]) and "ring: 1 of 6 rows" in describe(doc["rows_uri"])
    inspect(doc["rows_uri"], str(tmp_path / "page.html"), per_class=2)
    page = (tmp_path / "page.html").read_text()
    assert "<table id='survival'>" in page and "<td class='flag'>ring</td><td>6</td><td>1</td>" in page


def test_a_rerun_fetches_only_what_failed_transiently(hostile_set, server, tmp_path):
    out = str(tmp_path / "out")
    first = download(str(hostile_set), out, options=DownloadOptions(**OPTS))
    before = {(r["class_name"], r["sample_id"]): r for r in _set_rows(first)}
    server.reset_counts()
    server.down = False  # the host that answered 500 is back
    second = download(str(hostile_set), out, options=DownloadOptions(**OPTS))
    assert dict(server.counts) == {"/slow/3/c.jpg": 2, "/truncated/b.jpg": 2, "/down/d.jpg": 1}
    assert second["download"]["failures"] == {k: v for k, v in FAILURES.items() if k != "http_500"}
    assert second["download"]["samples"]["downloaded"] == 7 and second["counts_per_class"] == [3, 2, 4]
    after = {(r["class_name"], r["sample_id"]): r for r in _set_rows(second)}
    for key, row in before.items():  # members written before keep their offsets: a rewrite appends
        assert (after[key]["image_uri"], after[key]["image_offset"]) == (row["image_uri"], row["image_offset"])
    assert read_image_bytes(after[("ring", 10)]["image_uri"], after[("ring", 10)]["image_offset"],
                            after[("ring", 10)]["image_length"]) == IMAGES["d.jpg"]
    server.reset_counts()
    third = download(str(hostile_set), out, options=DownloadOptions(**OPTS | {"retries": 0}))
    assert dict(server.counts) == {"/slow/3/c.jpg": 1, "/truncated/b.jpg": 1}
    assert third["rows_sha256"] == second["rows_sha256"]
    server.reset_counts()
    download(str(hostile_set), out, options=DownloadOptions(**OPTS | {"retries": 0, "retry_failed": True}))
    assert server.counts["/status/404/x"] == 1 and server.counts["/text/x"] == 1  # permanent ones, on request


def test_resize_modes_match_img2dataset_geometry():
    data = _jpeg(64, 48, (200, 20, 20))
    for mode, size in (("keep_ratio", (43, 32)), ("center_crop", (32, 32)), ("border", (32, 32))):
        out, ext, w, h = prepare(data, DownloadOptions(image_size=32, resize_mode=mode, progress=False))
        assert ext == "jpg" and (w, h) == size and Image.open(io.BytesIO(out)).size == size
    out, ext, *_ = prepare(_png(30, 50), DownloadOptions(image_size=100, resize_mode="keep_ratio",
                                                          encode_format="webp"))
    assert ext == "webp" and Image.open(io.BytesIO(out)).size == (100, 167)  # upscaled, as img2dataset does
    kept = prepare(data, DownloadOptions())
    assert kept[0] == data  # no resize: the verified original bytes


def test_cli_download_and_materialize_download_share_one_path(hostile_set, server, tmp_path):
    runner = CliRunner()
    args = ["--timeout", "1", "--retries", "0", "--max-bytes", "1000000", "--samples-per-shard", "5",
            "--image-size", "32", "--resize-mode", "center_crop"]
    result = runner.invoke(main, ["download", str(hostile_set), "--out", str(tmp_path / "dl"), *args])
    assert result.exit_code == 0, result.output
    assert "http_404 1" in result.output and "retrieval set ->" in result.output
    doc = read_retrieval_manifest(str(tmp_path / "dl" / "set.parquet"), reader="test")
    assert doc["download"]["options"]["resize_mode"] == "center_crop"
    row = next(r for r in _set_rows(doc) if r["sample_id"] == 12)
    assert Image.open(io.BytesIO(read_image_bytes(row["image_uri"], row["image_offset"],
                                                  row["image_length"]))).size == (32, 32)
    result = runner.invoke(main, ["materialize", str(hostile_set), "--out", str(tmp_path / "mat"), "--download",
                                  "--samples-per-shard", "5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "mat").glob("*.status.parquet")) == \
        ["00000.status.parquet", "00001.status.parquet", "00002.status.parquet", "00003.status.parquet"]
    assert json.loads((tmp_path / "mat" / "set.parquet.json").read_text())["download"]["failures"]["http_404"] == 1


def test_a_set_nothing_of_which_downloads_fails_with_the_counts(server, tmp_path):
    rows = write_set(tmp_path / "set", rows_table([(0, "star", server.url("/status/404/a"), None),
                                                   (1, "ring", server.url("/status/404/b"), None)]))
    result = CliRunner().invoke(main, ["download", str(rows), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "no row" in result.output and "http_404" in result.output


def test_missing_download_extra_names_the_pip_command(hostile_set, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'react-index\[download\]'"):
        download(str(hostile_set), str(tmp_path / "out"))


def test_a_set_with_bytes_only_needs_no_network(tmp_path, monkeypatch):
    img = tmp_path / "x.jpg"
    img.write_bytes(IMAGES["a.jpg"])
    rows = write_set(tmp_path / "set", rows_table([(0, "star", None, str(img))]))
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    doc = download(str(rows), str(tmp_path / "out"), options=DownloadOptions(progress=False))
    assert doc["download"]["samples"]["copied"] == 1 and doc["rows"] == 1
    assert np.array_equal(doc["survival"]["rows_after"], [1, 0, 0]) and doc["survival"]["below"] == []


def _paths(value, prefix=""):
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in {f"{prefix}.{k}" if prefix else k} | _paths(v, f"{prefix}.{k}"
                                                                                                 if prefix else k)}
    if isinstance(value, list):
        return set().union(*(_paths(v, prefix + "[]") for v in value)) if value else set()
    return set()


def test_docs_show_every_key_download_writes(hostile_set, tmp_path):
    doc = download(str(hostile_set), str(tmp_path / "out"), options=DownloadOptions(**OPTS))
    text = (Path(__file__).resolve().parents[2] / "docs" / "manifests.md").read_text()
    block = next(b for b in re.findall(r"```jsonc\n(.*?)```", text, re.S) if b.lstrip().startswith('"download"'))
    snippet = json.loads("{" + block + "}")
    free = ("download.options.", "download.failures.", "download.failures_per_class[].")  # settings; reasons
    written = {p for p in _paths({k: doc[k] for k in ("download", "survival")}) if not p.startswith(free)}
    assert written - _paths(snippet) == set()
    for reason in doc["download"]["failures"]:
        assert f"`{reason.split('_')[0]}_" in text or f"`{reason}`" in text

