"""img2dataset interop without img2dataset (tests/e2e runs the real one): the exported URL list, and `attach` on
output laid out as img2dataset writes it (webdataset tars, per-shard parquet with status/error_message, stats)."""

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from react_index._imagerows import read_image_bytes
from react_index._manifests import UserError, read_retrieval_manifest
from react_index.attach import attach, export_url_list, reason_of
from react_index.build import build_index
from react_index.cli import main
from react_index.domain import TargetClass
from react_index.manifest import write_retrieval_manifest
from react_index.query import Selection, retrieve
from react_index.sources import discover, read_samples
from react_index.store import finalize, metadata_table, write_shard

CLASSES = ["star", "ring"]
URL = "http://img.example/{}.jpg"


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 40 % 256, 100, 200)).save(buf, "JPEG")
    return buf.getvalue()


def _set(folder, spec) -> str:
    """(sample id, class, url, image file) rows → a retrieval set."""
    n = len(spec)
    table = pa.table({
        "class_name": [c for _, c, _, _ in spec], "class_index": pa.array([CLASSES.index(c) for _, c, _, _ in spec],
                                                                           pa.int32()),
        "templates": [["a {c}"]] * n, "rank": pa.array(range(n), pa.int32()),
        "score": pa.array([0.5] * n, pa.float32()),
        "sample_id": pa.array([s for s, _, _, _ in spec], pa.int64()), "key": pa.nulls(n, pa.string()),
        "caption": [f"c{s}" for s, _, _, _ in spec], "image_uri": pa.array([f for _, _, _, f in spec], pa.string()),
        "image_offset": pa.nulls(n, pa.int64()), "image_length": pa.nulls(n, pa.int64()),
        "url": pa.array([u for _, _, u, _ in spec], pa.string())})
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "set.parquet")
    write_retrieval_manifest(str(folder / "set.parquet"), {
        "model": {"name": "m", "pretrained": "", "pretrained_sha256": None}, "mode": "t2i", "k": 4,
        "selection": {}, "classes": CLASSES, "templates": ["a {c}"],
        "counts_per_class": np.bincount(table.column("class_index").to_numpy(), minlength=2).tolist(),
        "unique_samples": len({s for s, _, _, _ in spec})}, [])
    return str(folder / "set.parquet")


def _img2dataset_shard(folder, shard: str, samples: list[dict], status: list[dict]):
    """A shard as img2dataset --output_format webdataset writes it: {key}.jpg/.txt/.json in a tar, a parquet with
    one row per input URL, and a stats file."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / f"{shard}.tar", "w") as tar:  # img2dataset's writer: PAX headers
        for s in samples:
            for ext, payload in (("jpg", s["jpg"]), ("txt", b"caption"), ("json", json.dumps(s["json"]).encode())):
                info = tarfile.TarInfo(f"{s['key']}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    pq.write_table(pa.Table.from_pylist(status), folder / f"{shard}.parquet")
    counts = {}
    for r in status:
        counts[r["error_message"] or "success"] = counts.get(r["error_message"] or "success", 0) + 1
    (folder / f"{shard}_stats.json").write_text(json.dumps({"count": len(status), "status_dict": counts}))


@pytest.fixture()
def downloaded(tmp_path):
    disk = tmp_path / "disk.jpg"
    disk.write_bytes(_jpeg(9))
    spec = [(0, "star", URL.format(0), None), (1, "star", URL.format(1), None), (2, "star", URL.format(2), None),
            (3, "ring", URL.format(3), None), (0, "ring", URL.format(0), None), (4, "ring", URL.format(0), None),
            (5, "ring", URL.format(5), None), (6, "ring", None, str(disk)), (7, "star", URL.format(7), None)]
    rows = _set(tmp_path / "set", spec)
    samples = [{"key": "000000000", "jpg": _jpeg(0), "json": {"sample_id": 0, "url": URL.format(0)}},
               {"key": "000000002", "jpg": _jpeg(2), "json": {"url": URL.format(2)}},  # no sample_id: by URL
               {"key": "000000005", "jpg": _jpeg(5), "json": {"sample_id": 5, "url": URL.format(5)}},
               {"key": "000000099", "jpg": _jpeg(8), "json": {"sample_id": 99, "url": "http://elsewhere/x"}}]
    status = [{"url": URL.format(i), "sample_id": i, "status": s, "error_message": m} for i, s, m in (
        (0, "success", None), (1, "failed_to_download", "HTTP Error 404: Not Found"), (2, "success", None),
        (3, "failed_to_download", "<urlopen error [Errno 111] Connection refused>"), (5, "success", None))]
    _img2dataset_shard(tmp_path / "i2d", "00000", samples, status)
    return rows, tmp_path / "i2d", disk


def test_attach_maps_samples_back_by_id_then_url_and_counts_failures_per_class(downloaded, tmp_path):
    rows, folder, disk = downloaded
    out = tmp_path / "i2d" / "attached.parquet"  # inside the download folder: not mistaken for a shard parquet
    doc = attach(rows, str(folder), out=str(out))
    got = {(r["class_name"], r["sample_id"]): r for r in pq.read_table(out).to_pylist()}
    assert set(got) == {("star", 0), ("star", 2), ("ring", 0), ("ring", 4), ("ring", 5), ("ring", 6)}
    for (_, sid), r in got.items():
        data = read_image_bytes(r["image_uri"], r["image_offset"], r["image_length"])
        assert data == ({0: _jpeg(0), 4: _jpeg(0), 2: _jpeg(2), 5: _jpeg(5)}.get(sid) or disk.read_bytes())
    assert got[("ring", 6)]["image_uri"] == str(disk)  # bytes it already had are kept as they are
    d = doc["download"]
    assert d["tool"] == "img2dataset" and d["failures"] == {"http_404": 1, "not_downloaded": 1, "refused": 1}
    assert d["failures_per_class"] == [{"http_404": 1, "not_downloaded": 1}, {"refused": 1}]
    assert d["samples"] == {"requested": 7, "downloaded": 4, "copied": 1, "failed": 3, "retryable": 1}
    assert doc["survival"]["rows_before"] == [4, 5] and doc["survival"]["rows_after"] == [2, 4]
    assert doc["survival"]["below"] == [] and doc["counts_per_class"] == [2, 4]
    read_retrieval_manifest(str(out), reader="test")  # a valid, trainable set (every row has a locator)


def test_attach_from_stats_alone_and_its_cli(downloaded, tmp_path):
    rows, folder, _ = downloaded
    (folder / "00000.parquet").unlink()  # only _stats.json: totals, and per class "not_downloaded"
    result = CliRunner().invoke(main, ["attach", rows, str(folder), "--out", str(tmp_path / "a.parquet"),
                                       "--min-survival", "0.9", "--verify"])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "star" in result.output
    doc = json.loads((tmp_path / "a.parquet.json").read_text())
    assert doc["download"]["failures"] == {"http_404": 1, "refused": 1, "not_downloaded": 1}
    assert doc["download"]["failures_per_class"] == [{"not_downloaded": 2}, {"not_downloaded": 1}]
    assert doc["survival"]["below"] == ["star", "ring"]


def test_attach_refuses_a_folder_without_matches_or_output(downloaded, tmp_path):
    rows, _, _ = downloaded
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no img2dataset output"):
        attach(rows, str(tmp_path / "empty"), out=str(tmp_path / "x.parquet"))
    other = _set(tmp_path / "other", [(50, "star", "http://nowhere/50.jpg", None)])
    with pytest.raises(UserError, match="no row .* matches"):
        attach(other, str(tmp_path / "i2d"), out=str(tmp_path / "y.parquet"))


@pytest.mark.parametrize(("message", "reason"), [
    ("HTTP Error 404: Not Found", "http_404"), ("HTTP Error 503: Service Unavailable", "http_503"),
    ("The read operation timed out", "timeout"), ("<urlopen error timed out>", "timeout"),
    ("<urlopen error [Errno 111] Connection refused>", "refused"),
    ("<urlopen error [Errno -2] Name or service not known>", "dns"),
    ("IncompleteRead(381 bytes read, 382 more expected)", "truncated"),
    ("[Errno 104] Connection reset by peer", "reset"), ("Image decoding error", "not_an_image"),
    ("image too small", "too_small"), ("something new", "other")])
def test_img2dataset_messages_map_to_download_reasons(message, reason):
    assert reason_of(message) == reason


def test_query_export_urls_writes_img2datasets_input(toy_root, tmp_path):
    rng = np.random.default_rng(0)
    shards = discover([str(toy_root / "corpus" / "00000.tar")])
    for shard in shards:
        samples = [s | {"source": shard.uri} for s in read_samples(shard)]
        vectors = rng.standard_normal((len(samples), 8)).astype(np.float32)
        write_shard(str(tmp_path / "store"), shard.name, shard.uri, {"image": vectors, "text": vectors},
                    metadata_table(samples), {})
    finalize(str(tmp_path / "store"), [s.name for s in shards], {"name": "x", "pretrained": "y"}, [])
    build_index(str(tmp_path / "store"), str(tmp_path / "index"), queries=20)
    np.save(tmp_path / "q.npy", rng.standard_normal((2, 8)).astype(np.float32))
    retrieve(str(tmp_path / "index"), [TargetClass("star"), TargetClass("ring")], out=str(tmp_path / "r.parquet"),
             templates=[], mode="t2i", selection=Selection(k=30), query_embeddings=str(tmp_path / "q.npy"),
             export_urls=str(tmp_path / "u.parquet"))
    urls, rows = pq.read_table(tmp_path / "u.parquet"), pq.read_table(tmp_path / "r.parquet")
    assert urls.schema.names == ["url", "caption", "sample_id", "class_name"]
    assert urls.num_rows == len(set(rows.column("url").to_pylist())) == len(set(urls.column("url").to_pylist()))
    first = {}
    for r in rows.to_pylist():  # a URL found for both classes keeps its first row's sample and class
        first.setdefault(r["url"], (r["sample_id"], r["class_name"]))
    assert {u["url"]: (u["sample_id"], u["class_name"]) for u in urls.to_pylist()} == first
    assert export_url_list(rows, str(tmp_path / "again.parquet")) == urls.num_rows
