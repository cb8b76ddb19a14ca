"""materialize and inspect on a store whose rows point at real toy-world images (vectors are random:
these tests are about bytes and pages, not ranking)."""

import os
import shutil
import subprocess
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from react_index._manifests import read_retrieval_manifest
from react_index.build import build_index
from react_index.domain import TargetClass
from react_index.inspect_html import inspect
from react_index.materialize import materialize, read_image
from react_index.query import Selection, retrieve
from react_index.sources import discover, read_samples
from react_index.store import finalize, metadata_table, write_shard

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def retrieved(tmp_path_factory, toy_root):
    root = tmp_path_factory.mktemp("mat")
    rng = np.random.default_rng(0)
    shards = discover([str(toy_root / "corpus" / f"0000{i}.tar") for i in range(2)])
    for shard in shards:
        rows = [s | {"source": shard.uri} for s in read_samples(shard)]
        rows[0]["key"] = "../../escape/attempt"  # a hostile key must not become a path
        vectors = rng.standard_normal((len(rows), 8)).astype(np.float32)
        write_shard(str(root / "store"), shard.name, shard.uri, {"image": vectors, "text": vectors},
                    metadata_table(rows), {})
    finalize(str(root / "store"), [s.name for s in shards], {"name": "x", "pretrained": "y"}, [])
    build_index(str(root / "store"), str(root / "index"), queries=20)
    np.save(root / "q.npy", rng.standard_normal((3, 8)).astype(np.float32))
    retrieve(str(root / "index"), [TargetClass(c) for c in ("star", "ring", "chevron")], out=str(root / "r.parquet"),
             templates=[],
             mode="t2i", selection=Selection(k=40), query_embeddings=str(root / "q.npy"))
    return root


def test_materialize_round_trips_image_bytes_exactly(retrieved, tmp_path):
    doc = materialize(str(retrieved / "r.parquet"), str(tmp_path / "shards"), samples_per_shard=25)
    old, new = pq.read_table(retrieved / "r.parquet").to_pylist(), pq.read_table(tmp_path / "shards" / "r.parquet")
    new = new.to_pylist()
    assert len(old) == len(new) == doc["rows"] and doc["lineage"][0]["kind"] == "react.retrieval"
    for a, b in zip(old, new, strict=True):
        assert a["sample_id"] == b["sample_id"] and b["image_uri"].startswith(str(tmp_path / "shards"))
        assert read_image(a) == read_image(b)  # ranged read of the new member = the original image bytes
    names = []
    for shard in sorted((tmp_path / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            names += tar.getnames()
    assert all("/" not in n and ".." not in n for n in names)
    assert len(names) == 3 * doc["unique_samples"]
    read_retrieval_manifest(str(tmp_path / "shards" / "r.parquet"), reader="test", verify_checksum=True)
    again = materialize(str(retrieved / "r.parquet"), str(tmp_path / "shards"), samples_per_shard=25)  # resume
    assert again["rows_sha256"] == doc["rows_sha256"]


def test_inspect_page_renders_its_images_in_headless_chromium(retrieved, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed for this test (apt-get install chromium; nox -s tests installs it)"
    stats = inspect(str(retrieved / "r.parquet"), str(tmp_path / "r.html"), per_class=6, min_hits=1000)
    assert stats["flagged"] == ["star", "ring", "chevron"]  # every class is under 1,000 hits
    page = (tmp_path / "r.html").read_text()
    assert page.count("<img src='data:image/") == 18 and "src='http" not in page  # self-contained
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p1'}", "--virtual-time-budget=5000",
                          "--dump-dom", f"file://{tmp_path / 'r.html'}"], capture_output=True, text=True, timeout=120)
    assert 'data-images-loaded="18"' in dom.stdout  # every embedded image decoded in the browser
    shot = tmp_path / "r.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p2'}", "--window-size=1000,1400",
                    f"--screenshot={shot}", f"file://{tmp_path / 'r.html'}"], capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    colourful = (pixels.max(axis=2) - pixels.min(axis=2) > 60).mean()
    assert colourful > 0.01  # the toy images' saturated shapes show up in the screenshot


def _url_only_set(folder, classes=("star", "ring", "chevron"), per_class=12):
    import pyarrow as pa

    from react_index.manifest import write_retrieval_manifest

    n = len(classes) * per_class
    rows = folder / "laion-pets.parquet"
    pq.write_table(pa.table({
        "class_name": [c for c in classes for _ in range(per_class)],
        "class_index": pa.array([i for i in range(len(classes)) for _ in range(per_class)], pa.int32()),
        "templates": [["a photo of a {c}."]] * n, "rank": pa.array(list(range(per_class)) * len(classes), pa.int32()),
        "score": pa.array(np.linspace(0.2, 0.35, n), pa.float32()), "sample_id": pa.array(range(n), pa.int64()),
        "key": [f"{i:09d}" for i in range(n)], "caption": [f"caption {i}" for i in range(n)],
        "image_uri": pa.array([None] * n, pa.string()), "image_offset": pa.array([None] * n, pa.int64()),
        "image_length": pa.array([None] * n, pa.int64()),
        "url": [f"https://images.example.invalid/{i}.jpg" for i in range(n)]}), rows)
    model = {"name": "ViT-B-32", "pretrained": "laion400m_e32", "pretrained_sha256": None}
    write_retrieval_manifest(str(rows), {"model": model, "mode": "t2i", "k": per_class, "selection": {},
                                         "classes": list(classes), "templates": ["a photo of a {c}."],
                                         "counts_per_class": [per_class] * len(classes), "unique_samples": n}, [])
    return rows


def test_inspect_of_a_url_only_set_says_what_is_not_shown_and_the_command_that_fixes_it(tmp_path, capsys):
    rows = _url_only_set(tmp_path)
    stats = inspect(str(rows), str(tmp_path / "page.html"), min_hits=1)
    assert stats["shown"] == 0 and stats["url_only"] == 36 and stats["flagged"] == []
    page = (tmp_path / "page.html").read_text()
    fix = (f"react-index download {rows} --out laion-pets-images &amp;&amp; react-index inspect "
           "laion-pets-images/laion-pets.parquet --out page.html")
    assert "0 of 36 images shown. 36 could not be shown: their rows are known only by their URL" in page
    assert fix in page and "pass --download" not in page
    assert page.count("not downloaded: known only by its URL</div>") == 36  # whole words, never cut
    assert "<span class='ok'>none</span>" in page and "class='flag'>none" not in page
    assert page.count(">score</text>") == 3 and page.count(">rows</text>") == 3  # histogram axes, labelled
    printed = capsys.readouterr().out
    assert "(0 of 36 images shown. 36 could not be shown" in printed and fix.replace("&amp;", "&") in printed

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed for this test (apt-get install chromium; nox -s tests installs it)"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p1'}", "--virtual-time-budget=5000",
                          "--dump-dom", f"file://{tmp_path / 'page.html'}"], capture_output=True, text=True,
                         timeout=120)
    assert '<span id="loaded"></span>' in dom.stdout and 'data-images-loaded="0"' in dom.stdout  # no "0 of 0"
    shot = tmp_path / "page.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p2'}", "--window-size=1000,1000",
                    f"--screenshot={shot}", f"file://{tmp_path / 'page.html'}"], capture_output=True, timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    assert red.sum() == 0  # nothing is flagged, so nothing is red
    if os.environ.get("REACT_KEEP_SCREENSHOTS"):
        shutil.copy(shot, os.environ["REACT_KEEP_SCREENSHOTS"])
