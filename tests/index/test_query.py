"""Retrieval on constructed stores with exact (Flat) indexes, checked against brute force; torch-free
throughout: queries are given as vectors (.npy), as a user without torch would."""

import itertools
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from builtin_domains import ELEVATER, FROM_OPENAI_PROMPTS, VOC2007

from react_index._manifests import UserError, read_retrieval_manifest
from react_index.build import build_index
from react_index.domain import TargetClass, builtin, load_classes, load_templates
from react_index.precomputed import ingest_precomputed
from react_index.query import RRF_K, Selection, retrieve
from react_index.store import open_store

D = 16


def _unit(x):
    x = np.asarray(x, np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """300 samples around 3 concept directions (+ exact duplicates), text vectors near their images."""
    from clustered import write_clip_retrieval_layout

    root = tmp_path_factory.mktemp("q")
    rng = np.random.default_rng(1)
    axes = np.eye(D, dtype=np.float32)[:3]
    concept = rng.integers(0, 3, 300)
    image = _unit(axes[concept] + 0.35 * rng.standard_normal((300, D)))
    image[299] = image[0]  # an exact duplicate
    text = _unit(image + 0.2 * rng.standard_normal((300, D)))
    src = write_clip_retrieval_layout(str(root / "src"), image.astype(np.float16), text.astype(np.float16), 100)
    ingest_precomputed(src, str(root / "store"), {"name": "toy", "pretrained": "x", "pretrained_sha256": None})
    build_index(str(root / "store"), str(root / "index"), queries=50)
    store = open_store(str(root / "store"))  # brute force runs on exactly the stored (float16) vectors
    image16, text16 = (np.concatenate([c for _, c in store.iter_chunks(m)]) for m in ("image", "text"))
    queries = np.stack([_unit(axes + 0.1 * rng.standard_normal((3, D))) for _ in range(2)], axis=1)  # (3, 2, D)
    np.save(root / "q.npy", queries)
    return root, image16, text16, concept, queries


CLASSES = [TargetClass("red"), TargetClass("green"), TargetClass("blue")]
TEMPLATES = ["a {c} thing.", "the {c} one."]


def _rows(path):
    return pq.read_table(path).to_pylist()


def _brute(vectors, queries, k):
    """Per class: sample id -> (best score, templates that found it), from exact top-k per template."""
    out = []
    for c in range(queries.shape[0]):
        found = {}
        for t in range(queries.shape[1]):
            scores = vectors @ queries[c, t]
            for i in np.argsort(-scores, kind="stable")[:k]:
                best, labels = found.get(int(i), (-np.inf, []))
                found[int(i)] = (max(best, float(scores[i])), [*labels, TEMPLATES[t]])
        out.append(found)
    return out


def test_k_per_template_deduplicated_within_class_matches_brute_force(world, tmp_path):
    root, image, _, _, queries = world
    out = tmp_path / "r.parquet"
    doc = retrieve(str(root / "index"), CLASSES, out=str(out), templates=TEMPLATES, mode="t2i",
                   selection=Selection(k=20),
                   query_embeddings=str(root / "q.npy"))
    rows = _rows(out)
    expected = _brute(image, queries, 20)
    for c in range(3):
        got = {r["sample_id"]: r for r in rows if r["class_index"] == c}
        assert set(got) == set(expected[c])  # the same samples …
        for sid, (score, labels) in expected[c].items():
            assert got[sid]["score"] == pytest.approx(score, abs=1e-4)  # … with their best score …
            assert sorted(got[sid]["templates"]) == sorted(set(labels))  # … and every template that found them
        ranks = sorted(got.values(), key=lambda r: r["rank"])
        assert [r["rank"] for r in ranks] == list(range(len(ranks)))
        assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(ranks))
    assert doc["counts_per_class"] == [len(e) for e in expected] and doc["rows"] == len(rows)
    assert doc["unique_samples"] == len({r["sample_id"] for r in rows})
    assert read_retrieval_manifest(str(out), reader="test")["lineage"][0]["kind"] == "react.index"
    assert rows[0]["url"].startswith("https://x.invalid/") and rows[0]["caption"].startswith("caption ")


def test_cross_class_policies(world, tmp_path):
    root = world[0]
    keep = retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "keep.parquet"), templates=TEMPLATES, mode="t2i",
                    selection=Selection(k=150), query_embeddings=str(root / "q.npy"))
    rows = _rows(tmp_path / "keep.parquet")
    ids = [r["sample_id"] for r in rows]
    assert len(ids) > len(set(ids))  # with large K, samples serve several classes (REACT's keep-all)
    best = retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "best.parquet"), templates=TEMPLATES, mode="t2i",
                    selection=Selection(k=150, cross_class="best-class"), query_embeddings=str(root / "q.npy"))
    brows = _rows(tmp_path / "best.parquet")
    assert len({r["sample_id"] for r in brows}) == len(brows) == keep["unique_samples"] == best["unique_samples"]
    scores = {}
    for r in rows:
        scores.setdefault(r["sample_id"], {})[r["class_index"]] = r["score"]
    for r in brows:
        assert r["class_index"] == max(scores[r["sample_id"]], key=lambda c: (scores[r["sample_id"]][c], -c))


def test_per_class_ensemble_threshold_budget_and_near_duplicates(world, tmp_path):
    root, image, _, _, queries = world
    ensemble = _unit(queries.mean(axis=1))
    retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "e.parquet"), templates=TEMPLATES, mode="t2i",
             selection=Selection(k=10, per="class"), query_embeddings=str(root / "q.npy"))
    rows = _rows(tmp_path / "e.parquet")
    for c in range(3):
        want = set(np.argsort(-(image @ ensemble[c]), kind="stable")[:10].tolist())
        assert {r["sample_id"] for r in rows if r["class_index"] == c} == want
    assert {tuple(r["templates"]) for r in rows} == {("ensemble",)}

    retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "t.parquet"), templates=TEMPLATES, mode="t2i",
             selection=Selection(k=50, min_score=0.8, budget=30), query_embeddings=str(root / "q.npy"))
    rows = _rows(tmp_path / "t.parquet")
    assert all(r["score"] >= 0.8 for r in rows) and all(
        sum(r["class_index"] == c for r in rows) <= 10 for c in range(3))

    dup = retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "d.parquet"), templates=TEMPLATES, mode="t2i",
                   selection=Selection(k=50, near_duplicates=0.999), query_embeddings=str(root / "q.npy"))
    plain = retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "p.parquet"), templates=TEMPLATES, mode="t2i",
                     selection=Selection(k=50), query_embeddings=str(root / "q.npy"))
    drows, prows = _rows(tmp_path / "d.parquet"), _rows(tmp_path / "p.parquet")
    c0 = next(r["class_index"] for r in prows if r["sample_id"] == 0)
    in_class = {r["sample_id"] for r in prows if r["class_index"] == c0}
    assert {0, 299} <= in_class  # the exact duplicate pair is retrieved together …
    assert len({0, 299} & {r["sample_id"] for r in drows if r["class_index"] == c0}) == 1  # … and one is dropped
    assert sum(dup["counts_per_class"]) == sum(plain["counts_per_class"]) - 1


def test_t2t_searches_the_text_index_and_fusion_is_reciprocal_rank(world, tmp_path):
    root, image, text, _, queries = world
    retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "t.parquet"), templates=TEMPLATES, mode="t2t",
             selection=Selection(k=5),
             query_embeddings=str(root / "q.npy"))
    rows = _rows(tmp_path / "t.parquet")
    assert {r["sample_id"] for r in rows if r["class_index"] == 1} == set(_brute(text, queries, 5)[1])
    retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "f.parquet"), templates=TEMPLATES, mode="fusion",
             selection=Selection(k=5),
             query_embeddings=str(root / "q.npy"))
    fused = _rows(tmp_path / "f.parquet")
    for c in range(3):
        rrf = {}
        for vectors in (image, text):
            ranked = sorted(_brute(vectors, queries, 5)[c].items(), key=lambda kv: -kv[1][0])
            for rank, (sid, _) in enumerate(ranked):
                rrf[sid] = rrf.get(sid, 0) + 1 / (RRF_K + 1 + rank)
        got = {r["sample_id"]: r["score"] for r in fused if r["class_index"] == c}
        assert got.keys() == rrf.keys()
        assert all(got[s] == pytest.approx(rrf[s], rel=1e-5) for s in got)


def test_query_embeddings_need_no_torch_and_bad_shapes_are_named(world, tmp_path):
    root = world[0]
    (tmp_path / "classes.txt").write_text("red\ngreen\nblue\n")
    code = ("import sys; from react_index.cli import main; "
            f"main(['query', '--index', {str(root / 'index')!r}, '--classes', {str(tmp_path / 'classes.txt')!r}, "
            f"'--query-embeddings', {str(root / 'q.npy')!r}, '--k', '5', '--out', {str(tmp_path / 'r.parquet')!r}], "
            "standalone_mode=False); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False") and "3 classes, " in out.stdout
    np.save(tmp_path / "bad.npy", np.zeros((2, D), np.float32))
    with pytest.raises(ValueError, match=r"bad.npy: query embeddings of shape \(2, 1, 16\); expected \(3, d\)"):
        retrieve(str(root / "index"), CLASSES, out=str(tmp_path / "x.parquet"), templates=[], mode="t2i",
                 selection=Selection(k=5),
                 query_embeddings=str(tmp_path / "bad.npy"))


def test_domains_from_files_and_built_in_sets(tmp_path):
    assert len(load_templates(None)) == 80 and len(load_templates("simple_imagenet")) == 7
    assert load_templates("pets") == ["a photo of a {c}, a type of pet."]
    assert len(load_classes("imagenet1k")) == 1000 and load_classes("imagenet1k")[0].name == "tench"
    (tmp_path / "t.txt").write_text("a photo of a {}.\n\nart of the {c}.\n")
    assert load_templates(str(tmp_path / "t.txt")) == ["a photo of a {c}.", "art of the {c}."]
    (tmp_path / "c.json").write_text('{"star": ["five-pointed star"], "ring": []}')
    assert load_classes(str(tmp_path / "c.json")) == [TargetClass("star", ("five-pointed star",)), TargetClass("ring")]
    (tmp_path / "bad.txt").write_text("no class here\n")
    with pytest.raises(ValueError, match=r"bad.txt: line 1: template .* has no \{\} or \{c\}"):
        load_templates(str(tmp_path / "bad.txt"))
    with pytest.raises(ValueError, match="unknown template set 'nope'; built-in sets: .*openai_imagenet"):
        load_templates("nope")
    (tmp_path / "d.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match=r"d.txt: line 3: class name .a. repeats line 1"):
        load_classes(str(tmp_path / "d.txt"))


@pytest.mark.parametrize("name", sorted({*ELEVATER, *builtin()["metrics"], *FROM_OPENAI_PROMPTS}))
def test_every_elevater_dataset_is_a_built_in_domain(name):
    """`--classes NAME --templates NAME` resolve for every ELEVATER dataset (and every one with a metric)."""
    classes = load_classes(name)  # a name that is not built in is read as a file, and fails
    assert [c.name for c in classes] == builtin()["classnames"][name] and len(classes) >= 2
    templates = load_templates(name)  # an unknown set raises "unknown template set"
    assert templates and all("{c}" in t for t in templates)
    if name in FROM_OPENAI_PROMPTS:
        n, first, last = FROM_OPENAI_PROMPTS[name]
        assert (len(classes), classes[0].name, classes[-1].name) == (n, first, last)
    if name.startswith("voc2007"):
        assert [c.name for c in classes] == VOC2007


def test_large_k_on_an_ivf_index_probes_enough_lists(tmp_path):
    """REACT asks for thousands of neighbours per prompt; an IVF index tuned for top-10 would pad with -1."""
    from stores import make_store

    store, image, _ = make_store(tmp_path, 4000, D, 2000, n_clusters=40)
    index = build_index(str(store), str(tmp_path / "index"), index_key="IVF64,Flat", modalities=["image"],
                        queries=50)
    nprobe = index["indexes"]["image"]["search_params"]["nprobe"]
    k = 1500
    assert nprobe * 4000 / 64 < k  # the tuned nprobe alone reaches fewer than k vectors
    queries = _unit(image[[0, 1]].astype(np.float32))
    np.save(tmp_path / "q.npy", queries)
    out = tmp_path / "r.parquet"
    retrieve(str(tmp_path / "index"), CLASSES[:2], out=str(out), templates=[], mode="t2i", selection=Selection(k=k),
             query_embeddings=str(tmp_path / "q.npy"))
    rows = pq.read_table(out, columns=["class_name", "sample_id"])
    names, ids = np.array(rows.column("class_name")), rows.column("sample_id").to_numpy()
    assert {c: int((names == c).sum()) for c in ("red", "green")} == {"red": k, "green": k}
    exact = np.argsort(-(image.astype(np.float32) @ queries[0]), kind="stable")[:100]
    found = set(ids[names == "red"].tolist())
    assert len(found & set(exact.tolist())) >= 95  # the top of the list is still (nearly) exact


def test_nprobe_overrides_the_tuned_value_and_is_recorded(tmp_path):
    """--nprobe: probing every list of an IVF-Flat index is exact search; the manifest says what was probed."""
    import json

    from stores import make_store

    store, image, _ = make_store(tmp_path, 4000, D, 2000, n_clusters=40)
    build_index(str(store), str(tmp_path / "index"), index_key="IVF64,Flat", modalities=["image"], queries=50)
    queries = _unit(np.random.default_rng(1).standard_normal((2, D)).astype(np.float32))
    np.save(tmp_path / "q.npy", queries)
    out = tmp_path / "r.parquet"
    retrieve(str(tmp_path / "index"), CLASSES[:2], out=str(out), templates=[], mode="t2i",
             selection=Selection(k=20, per="class"), query_embeddings=str(tmp_path / "q.npy"), nprobe=64)
    rows = pq.read_table(out, columns=["class_index", "sample_id"]).to_pydict()
    for c in (0, 1):
        exact = np.argsort(-(image.astype(np.float32) @ queries[c]), kind="stable")[:20]
        got = [s for s, k in zip(rows["sample_id"], rows["class_index"], strict=True) if k == c]
        assert set(got) == set(exact.tolist())
    assert json.loads((tmp_path / "r.parquet.json").read_text())["selection"]["nprobe"] == 64
    build_index(str(store), str(tmp_path / "flat"), index_key="Flat", modalities=["image"], queries=50)
    with pytest.raises(UserError, match="not an IVF index"):
        retrieve(str(tmp_path / "flat"), CLASSES[:2], out=str(out), templates=[], mode="t2i",
                 query_embeddings=str(tmp_path / "q.npy"), nprobe=8)


def test_an_index_holding_its_store_opens_from_any_directory_and_after_a_move(tmp_path, monkeypatch):
    """`react-index build … --out index` records `index/store` relative to where it ran; the index must still
    open from elsewhere, and when its folder is moved (the recorded path is then stale), from its own store/."""
    import shutil

    from clustered import write_clip_retrieval_layout

    from react_index.query import open_index

    rng = np.random.default_rng(0)
    image = _unit(rng.standard_normal((60, D))).astype(np.float16)
    src = write_clip_retrieval_layout(str(tmp_path / "src"), image, image, 30)
    monkeypatch.chdir(tmp_path)
    ingest_precomputed(src, "index/store", {"name": "toy", "pretrained": "x", "pretrained_sha256": None})
    build_index("index/store", "index", queries=10)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _, store, indexes = open_index(str(tmp_path / "index"))
    assert store.n == 60 and set(indexes) == {"image", "text"}
    shutil.move(str(tmp_path / "index"), str(tmp_path / "moved"))
    monkeypatch.chdir(tmp_path)  # "index/store" is now stale from here too
    _, store, _ = open_index(str(tmp_path / "moved"))
    assert store.n == 60 and store.uri.endswith("moved/store")
    shutil.copytree(str(tmp_path / "moved"), str(tmp_path / "index"))  # a folder at the recorded path again ...
    other = write_clip_retrieval_layout(str(tmp_path / "src2"), image[:30], image[:30], 30)
    shutil.rmtree(tmp_path / "index" / "store")
    ingest_precomputed(other, "index/store", {"name": "toy", "pretrained": "x", "pretrained_sha256": None})
    with pytest.raises(Exception, match="was built from store"):  # ... holding another store: refused by id
        open_index(str(tmp_path / "moved"))
