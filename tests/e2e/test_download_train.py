"""A URL-only retrieval set becomes trainable through both routes, against a real HTTP server on 127.0.0.1:
`react-index download`, and real img2dataset (in its own venv) + `react-index attach`. react-tune trains on each.

The set: the tiny toy world's first two shards (200 rows, class = true shape), known only by URL; every 7th
URL is dead (404) and every 11th answers with an HTML page (not an image)."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bench_p6_download import img2dataset_command, img2dataset_env, img2dataset_venv
from toy_retrieval import toy_rows
from urlserver import UrlServer

from react_index._imagerows import read_image_bytes
from react_index.attach import export_url_list
from react_index.manifest import write_retrieval_manifest
from react_tune.manifest import ManifestError
from react_tune.train import TrainConfig, train
from toyworld.models import TINY

BIN = Path(sys.executable).parent


def _fate(i: int) -> str | None:
    return "http_404" if i % 7 == 3 else "not_an_image" if i % 11 == 5 else None


@pytest.fixture(scope="module")
def served(toy_root):
    rows = toy_rows([toy_root / "corpus" / "00000.tar", toy_root / "corpus" / "00001.tar"])
    images = {f"{k}.jpg": read_image_bytes(u, o, n) for k, u, o, n in zip(
        *(rows.column(c).to_pylist() for c in ("key", "image_uri", "image_offset", "image_length")), strict=True)}
    with UrlServer(images) as server:
        yield server, rows


@pytest.fixture()
def url_set(served, tmp_path):
    """The rows known only by URL (rows + sidecar, as `react-index query` writes them); expected losses."""
    server, rows = served
    keys = rows.column("key").to_pylist()
    paths = {"http_404": "/status/404/{}", "not_an_image": "/text/{}", None: "/img/{}.jpg"}
    urls = [server.url(paths[_fate(i)].format(k)) for i, k in enumerate(keys)]
    table = rows.set_column(rows.schema.get_field_index("url"), "url", pa.array(urls, pa.string()))
    for name, typ in (("image_uri", pa.string()), ("image_offset", pa.int64()), ("image_length", pa.int64())):
        table = table.set_column(table.schema.get_field_index(name), name, pa.nulls(len(urls), typ))
    classes = sorted(set(table.column("class_name").to_pylist()))
    path = tmp_path / "set" / "set.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    cls = np.asarray(table.column("class_index"))
    write_retrieval_manifest(str(path), {
        "model": {"name": TINY, "pretrained": "", "pretrained_sha256": None}, "mode": "t2i", "k": 100,
        "selection": {"per": "template"}, "classes": classes, "templates": ["a photo of a {c}."],
        "counts_per_class": np.bincount(cls, minlength=len(classes)).tolist(), "unique_samples": len(keys)}, [])
    lost = [Counter() for _ in classes]
    for i, c in enumerate(cls.tolist()):
        if _fate(i):
            lost[c][_fate(i)] += 1
    survivors = {i for i in range(len(keys)) if not _fate(i)}
    return path, [dict(x) for x in lost], survivors


def _train_two_steps(manifest, weights, out) -> dict:
    done = train(TrainConfig(retrieval=str(manifest), model=TINY, pretrained=str(weights), out=str(out), steps=2,
                             batch_size=16, workers=0, lr=1e-3, warmup=0))
    assert done["training"]["steps"] == 2 and done["lineage"][0]["kind"] == "react.retrieval"
    assert not any(done["training"]["skipped"].values())  # every row of the downloaded set has a readable image
    return done


def _check_counts(doc, lost, survivors, out_rows):
    totals = sum((Counter(x) for x in lost), Counter())
    assert doc["download"]["failures"] == dict(totals)
    assert doc["download"]["failures_per_class"] == lost
    assert set(pq.read_table(out_rows, columns=["sample_id"]).column(0).to_pylist()) == survivors
    assert doc["survival"]["rows_after"] == [b - sum(x.values()) for b, x in zip(doc["survival"]["rows_before"],
                                                                                     lost, strict=True)]


def test_react_index_download_then_train(url_set, tiny_weights, tmp_path):
    path, lost, survivors = url_set
    with pytest.raises(ManifestError, match=r"react-index download SET.parquet --out DIR.*react-index attach"):
        train(TrainConfig(retrieval=str(path), model=TINY, pretrained=str(tiny_weights), out=str(tmp_path / "no"),
                          steps=2, batch_size=16, workers=0))  # react-tune names both routes
    out = subprocess.run([BIN / "react-index", "download", path, "--out", tmp_path / "dl", "--image-size", "32",
                          "--resize-mode", "center_crop", "--samples-per-shard", "64"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "http_404" in out.stdout and "not_an_image" in out.stdout
    doc = json.loads((tmp_path / "dl" / "set.parquet.json").read_text())
    _check_counts(doc, lost, survivors, tmp_path / "dl" / "set.parquet")
    _train_two_steps(tmp_path / "dl" / "set.parquet", tiny_weights, tmp_path / "ck")


def test_real_img2dataset_then_attach_then_train(url_set, tiny_weights, tmp_path):
    path, lost, survivors = url_set
    venv = img2dataset_venv()  # created once (bench-out/venvs/img2dataset); a failed install fails the test
    urls = tmp_path / "urls.parquet"
    assert export_url_list(pq.read_table(path), str(urls)) == 200  # what `react-index query --export-urls` writes
    assert pq.read_schema(urls).names == ["url", "caption", "sample_id", "class_name"]
    run = subprocess.run(img2dataset_command(venv, urls, tmp_path / "i2d", 32, processes=1, threads=16,
                                             per_shard=64),
                         capture_output=True, text=True, env=img2dataset_env(), timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "i2d").glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar",
                                                                         "00003.tar"]
    out = subprocess.run([BIN / "react-index", "attach", path, tmp_path / "i2d", "--out", tmp_path / "att.parquet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "att.parquet.json").read_text())
    assert doc["download"]["tool"] == "img2dataset"
    _check_counts(doc, lost, survivors, tmp_path / "att.parquet")
    _train_two_steps(tmp_path / "att.parquet", tiny_weights, tmp_path / "ck")
