"""Caption matching, concept frequency and caption-match ranking (torch-free), each checked against an independent
brute force: plain loops over tokenised captions, numpy dot products."""

import csv
import json
import random
import re
import sys
import unicodedata

import numpy as np
import pytest

from react_index._domainfiles import DomainError, load_frequency, most_frequent_names
from react_index._manifests import MissingExtraError, UserError
from react_index.caption_rank import rank_candidates
from react_index.captions import CaptionMatcher, caption_candidates, match_batches, match_store, name_forms
from react_index.domain import TargetClass
from react_index.frequency import (
    TAIL_MIN,
    TAIL_QUANTILE,
    concept_frequency,
    count_frequency,
    format_table,
    write_frequency,
)
from react_index.store import finalize, metadata_table, open_store, write_shard

CLASSES = [
    TargetClass("dog", ("puppy", "hound")),
    TargetClass("hot dog", ("frankfurter",)),
    TargetClass("café", ("coffee shop",)),
    TargetClass("butterfly", ()),
    TargetClass("box", ("crate",)),
    TargetClass("bus", ()),
    TargetClass("straße", ("street",)),
    TargetClass("t-shirt", ("tee",)),
    TargetClass("ox", ()),
    TargetClass("sea", ()),  # "seas"; must not match "season"
    TargetClass("never seen", ()),
]

# words around the names: near misses (prefixes, compounds), case, punctuation and unicode variants
WORDS = ["dog", "Dogs", "DOG'S", "dogma", "puppies", "puppy", "hounds", "hot", "Hot-Dog", "hotdog", "dogs,", "hot",
         "frankfurters!", "Café!", "cafés", "cafe\u0301", "CAFÉ", "coffee", "shop", "shops", "butterflies",
         "butterfly.", "butterflys", "boxes", "box", "boxs", "crates", "bus", "buses", "busses", "STRASSE",
         "Straße", "streets", "t-shirts", "T shirt", "tshirt", "tees", "ox", "oxes", "oxen", "sea", "seas",
         "season", "the", "a", "with", "on", "red", "big", "—", "(", ")", "photo", "of", "\t", "  "]


def brute_forms(name: str) -> tuple[list[str], set[str]]:
    """(the name's words, the forms its last word may take), written apart from captions.py."""
    words = re.findall(r"[^\W_]+", unicodedata.normalize("NFC", name).casefold())
    last = words[-1]
    forms = {last}
    if len(last) >= 2 and last[-1] in "abcdefghijklmnopqrstuvwxyz":
        forms.add(last + "s")
        if last.endswith(("s", "x", "z", "ch", "sh", "o")):
            forms.add(last + "es")
        if last.endswith("y") and last[-2] not in "aeiou":
            forms.add(last[:-1] + "ies")
    return words, forms


def brute_mentions(caption: str | None, name: str) -> bool:
    tokens = re.findall(r"[^\W_]+", unicodedata.normalize("NFC", caption or "").casefold())
    words, last = brute_forms(name)
    n = len(words)
    for i in range(len(tokens) - n + 1):
        if tokens[i:i + n - 1] == words[:-1] and tokens[i + n - 1] in last:
            return True
    return False


def random_captions(n: int, seed: int) -> list[str | None]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.03:
            out.append(None if rng.random() < 0.5 else "")
            continue
        out.append(rng.choice(["", " ", "-"]).join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))))
    return out


def brute_pairs(captions, classes):
    names = [(ci, n) for ci, c in enumerate(classes) for n in c.names]
    return {(r, ni) for r, cap in enumerate(captions) for ni, (_, name) in enumerate(names)
            if brute_mentions(cap, name)}


def test_name_forms_follow_the_documented_rules():
    assert name_forms("Hot-Dog") == ("hot dog", "hot dogs")
    assert name_forms("café") == ("café",)  # ends in a non-ASCII letter: no plural
    assert name_forms("butterfly") == ("butterfly", "butterflys", "butterflies")
    assert name_forms("day") == ("day", "days")  # vowel + y: no "daies"
    assert name_forms("box") == ("box", "boxs", "boxes")
    assert name_forms("  Coffee \t  SHOP ") == ("coffee shop", "coffee shops")
    assert name_forms("Straße") == ("strasse", "strasses")
    assert name_forms("x") == ("x",) and name_forms("b52") == ("b52",)
    assert name_forms("!!") == ()


def test_examples_whole_words_phrases_plurals_unicode_punctuation():
    classes = [TargetClass("café"), TargetClass("hot dog"), TargetClass("dog"), TargetClass("butterfly")]
    matcher = CaptionMatcher(classes)
    captions = ["Café!", "cafés", "cafe\u0301 au lait", "Two HOT\t\tDOGS", "hotdog", "dogma", "a dog's life",
                "Butterflies.", "the hot", "dog on a hot-dog stand"]
    rows, names = matcher.match(captions)
    got = {(int(r), matcher.names[n].name) for r, n in zip(rows, names, strict=True)}
    assert got == {(0, "café"), (2, "café"), (3, "hot dog"), (3, "dog"), (6, "dog"), (7, "butterfly"),
                   (9, "dog"), (9, "hot dog")}
    # "the hot" + "dog on …" are adjacent captions: a phrase never spans two captions (row 8 has no match)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_equals_brute_force(seed):
    captions = random_captions(3000, seed)
    matcher = CaptionMatcher(CLASSES)
    rows, names = matcher.match(captions)
    got = set(zip(rows.tolist(), names.tolist(), strict=True))
    assert len(got) == len(rows)  # each (caption, name) once
    assert got == brute_pairs(captions, CLASSES)
    assert got  # the vocabulary does produce matches


def test_batches_give_the_same_pairs_as_one_pass():
    captions = random_captions(2000, 7)
    whole = match_batches([(0, np.array(captions, dtype=object).tolist())], CLASSES)
    import pyarrow as pa

    parts = match_batches(((lo, pa.array(captions[lo:lo + 333], pa.string())) for lo in range(0, 2000, 333)),
                          CLASSES)
    assert np.array_equal(whole.rows, parts.rows) and np.array_equal(whole.names, parts.names)
    assert whole.captions == parts.captions == 2000


def test_shared_names_count_for_every_class_that_lists_them():
    classes = [TargetClass("jaguar", ("big cat",)), TargetClass("lion", ("big cat",)), TargetClass("car")]
    matcher = CaptionMatcher(classes)
    rows, names = matcher.match(["two big cats", "a jaguar car"])
    got = {(int(r), matcher.names[n].class_index, matcher.names[n].name) for r, n in zip(rows, names, strict=True)}
    assert got == {(0, 0, "big cat"), (0, 1, "big cat"), (1, 0, "jaguar"), (1, 2, "car")}


def test_a_name_without_letters_is_refused():
    with pytest.raises(UserError, match="no letters or digits"):
        CaptionMatcher([TargetClass("ok", ("--",))])


def test_missing_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ahocorasick", None)
    with pytest.raises(MissingExtraError, match=r"react-index\[captions\]"):
        CaptionMatcher(CLASSES)


# --- a store: captions in 3 shards, random vectors ---------------------------------------------------------

DIM = 16


@pytest.fixture(scope="module")
def caption_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    captions = random_captions(5000, 11)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((len(captions), DIM)).astype(np.float32)
    text = rng.standard_normal((len(captions), DIM)).astype(np.float32)
    names, bounds = [], [0, 1700, 3100, 5000]
    for s in range(3):
        lo, hi = bounds[s], bounds[s + 1]
        meta = metadata_table([{"key": str(i), "caption": captions[i], "url": f"http://x/{i}.jpg"}
                               for i in range(lo, hi)])
        write_shard(str(root / "store"), f"s{s}", "mem", {"image": image[lo:hi], "text": text[lo:hi]}, meta, {})
        names.append(f"s{s}")
    finalize(str(root / "store"), names, {"name": "x", "pretrained": "y"}, [])
    return str(root / "store"), captions


def test_caption_candidates_of_a_store(caption_store):
    uri, captions = caption_store
    candidates = caption_candidates(uri, CLASSES, batch_rows=900)
    assert len(candidates) == len(CLASSES)
    for c, rows in zip(CLASSES, candidates, strict=True):
        want = [r for r, cap in enumerate(captions) if any(brute_mentions(cap, n) for n in c.names)]
        assert rows.tolist() == want, c.name
    assert candidates[-1].size == 0  # "never seen"


def test_frequency_counts_equal_an_independent_count(caption_store):
    uri, captions = caption_store
    table = concept_frequency(uri, CLASSES)
    assert table.captions == len(captions)
    class_count = {c.name: sum(any(brute_mentions(cap, n) for n in c.names) for cap in captions) for c in CLASSES}
    name_count = {c.name: {n: sum(brute_mentions(cap, n) for cap in captions) for n in c.names} for c in CLASSES}
    by_name = {r.class_name: r for r in table.rows}
    for c in CLASSES:
        row = by_name[c.name]
        assert row.count == class_count[c.name]
        assert row.names == name_count[c.name]
        assert list(row.names) == list(c.names)  # the class's name order
        best = max(c.names, key=lambda n: name_count[c.name][n])  # first of equals
        assert row.most_frequent == best and row.most_frequent_count == name_count[c.name][best]
        assert row.fraction == pytest.approx(row.count / len(captions))
    counts = [r.count for r in table.rows]
    assert counts == sorted(counts, reverse=True) and [r.rank for r in table.rows] == list(range(1, len(CLASSES) + 1))
    ordered = sorted(class_count.values())
    threshold = max(ordered[int(np.floor(TAIL_QUANTILE * (len(ordered) - 1)))], TAIL_MIN - 1)
    assert {r.class_name for r in table.rows if r.tail} == {n for n, k in class_count.items() if k <= threshold}
    assert by_name["never seen"].tail and by_name["never seen"].most_frequent == "never seen"
    text = format_table(table, limit=3)
    assert "8 more classes" in text and f"{len(captions):,} captions" in text


def test_a_synonym_can_be_the_most_frequent_name():
    classes = [TargetClass("automobile", ("car",))]
    matches = match_batches([(0, ["a car", "two cars", "an automobile", "no"])], classes)
    row = count_frequency(matches).rows[0]
    assert (row.count, row.names, row.most_frequent) == (3, {"automobile": 1, "car": 2}, "car")


@pytest.mark.parametrize("ext", ["csv", "json"])
def test_frequency_files_read_back(caption_store, tmp_path, ext):
    uri, _ = caption_store
    table = concept_frequency(uri, CLASSES)
    out = str(tmp_path / f"freq.{ext}")
    write_frequency(table, out)
    if ext == "csv":
        with open(out, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert [r["class_name"] for r in rows] == [r.class_name for r in table.rows]
        assert [int(r["count"]) for r in rows] == [r.count for r in table.rows]
        assert [json.loads(r["names"]) for r in rows] == [r.names for r in table.rows]
        assert [r["tail"] for r in rows] == ["true" if r.tail else "false" for r in table.rows]
    else:
        doc = json.loads(open(out, encoding="utf-8").read())
        assert doc["format"] == "react.concept-frequency" and doc["captions"] == table.captions
        assert [(r["class_name"], r["count"], r["names"], r["tail"]) for r in doc["classes"]] == \
            [(r.class_name, r.count, r.names, r.tail) for r in table.rows]
    freq = load_frequency(out)
    assert freq == {r.class_name: (r.most_frequent, r.names) for r in table.rows}
    assert most_frequent_names(out, CLASSES) == table.most_frequent_names()


def test_frequency_reader_fallbacks_and_errors(tmp_path):
    p = tmp_path / "f.csv"
    p.write_text('class_name,count,names\ncar,3,"{""car"": 1, ""auto"": 2}"\nbus,0,\n', encoding="utf-8")
    assert most_frequent_names(str(p)) == {"car": "auto", "bus": "bus"}  # from names; no names: the class name
    with pytest.raises(DomainError, match="no row for class"):
        most_frequent_names(str(p), [TargetClass("car"), TargetClass("tram")])
    bad = tmp_path / "bad.csv"
    bad.write_text("name,count\ncar,3\n", encoding="utf-8")
    with pytest.raises(DomainError, match="no 'class_name' column"):
        load_frequency(str(bad))
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps([{"class_name": "a", "count": 1, "most_frequent": "b"},
                               {"class_name": "a", "count": 2}]), encoding="utf-8")
    with pytest.raises(DomainError, match="entry 2: class 'a' repeats entry 1"):
        load_frequency(str(dup))
    with pytest.raises(DomainError, match=r"\.csv or \.json"):
        load_frequency(str(tmp_path / "x.txt"))
    with pytest.raises(UserError, match=r"\.csv or \.json"):
        write_frequency(count_frequency(match_batches([(0, ["a"])], [TargetClass("a")])), str(tmp_path / "x.tsv"))


@pytest.mark.parametrize("modality", ["image", "text"])
@pytest.mark.parametrize("step", [7, 1 << 16])
def test_ranking_returns_the_exact_top_k_per_class(caption_store, modality, step):
    uri, _ = caption_store
    store = open_store(uri)
    candidates = caption_candidates(store, CLASSES)
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((len(CLASSES), DIM)).astype(np.float32)
    k = 25
    cls, ids, score = rank_candidates(store, queries, candidates, k, modality=modality, step=step)
    vectors = np.concatenate([np.asarray(store.shard_vectors(modality, i), np.float32) for i in range(3)])
    for c, rows in enumerate(candidates):
        sel = cls == c
        brute = vectors[rows] @ queries[c]
        order = np.lexsort((rows, -brute))[:k]
        assert ids[sel].tolist() == rows[order].tolist()
        np.testing.assert_allclose(score[sel], brute[order], rtol=1e-5, atol=1e-6)
        assert sel.sum() == min(k, len(rows))
    assert cls.tolist() == sorted(cls.tolist())


def test_ranking_refuses_mismatched_queries(caption_store):
    store = open_store(caption_store[0])
    with pytest.raises(ValueError, match="width"):
        rank_candidates(store, np.zeros((1, DIM + 1), np.float32), [np.array([0])], 3)
    with pytest.raises(ValueError, match="outside"):
        rank_candidates(store, np.zeros((1, DIM), np.float32), [np.array([store.n])], 3)


def test_match_store_accepts_an_index_folder_only_by_its_manifest(caption_store, tmp_path):
    uri, captions = caption_store
    assert match_store(uri, CLASSES).captions == len(captions)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "react.retrieval-set"}))
    with pytest.raises(UserError, match="pass an index folder or an embedding store"):
        match_store(str(tmp_path), CLASSES)


# --- through the CLI: react-index frequency, query --mode caption / fusion with caption, REAL-Prompt --------------

def _index(tmp_path, store_uri):
    from react_index.build import build_index

    build_index(store_uri, str(tmp_path / "idx"), index_key="Flat", queries=50)
    return str(tmp_path / "idx")


def _cli(*args):
    from click.testing import CliRunner

    from react_index.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_query_caption_mode_ranks_each_class_matches_by_exact_similarity(caption_store, tmp_path):
    import pyarrow.parquet as pq

    uri, captions = caption_store
    index = _index(tmp_path, uri)
    classes = CLASSES[:5]
    (tmp_path / "classes.json").write_text(json.dumps({c.name: list(c.synonyms) for c in classes}))
    rng = np.random.default_rng(3)
    q = rng.standard_normal((len(classes), DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    np.save(tmp_path / "q.npy", q)
    store = open_store(uri)
    for rank in ("image", "text"):
        out = tmp_path / f"set-{rank}.parquet"
        result = _cli("query", "--index", index, "--classes", tmp_path / "classes.json", "--mode", "caption",
                      "--rank", rank, "--query-embeddings", tmp_path / "q.npy", "--k", 7, "--out", out)
        assert result.exit_code == 0, result.output
        table = pq.read_table(out).to_pydict()
        vectors = np.concatenate([c for _, c in store.iter_chunks(rank)])
        for c, cls in enumerate(classes):
            matching = [r for r, cap in enumerate(captions) if any(brute_mentions(cap, n) for n in cls.names)]
            scores = vectors[matching] @ q[c]
            want = [matching[i] for i in np.lexsort((matching, -scores))[:7]]
            got = [s for s, k in zip(table["sample_id"], table["class_index"], strict=True) if k == c]
            assert got == want, (rank, cls.name)
        sidecar = json.loads((tmp_path / f"set-{rank}.parquet.json").read_text())
        assert sidecar["mode"] == "caption" and sidecar["selection"]["caption_rank"] == rank
    # fusion with caption: a sample of a class found by caption matching gets its caption rank in the fused score
    out = tmp_path / "fused.parquet"
    result = _cli("query", "--index", index, "--classes", tmp_path / "classes.json", "--mode", "fusion",
                  "--fuse", "t2i,caption", "--query-embeddings", tmp_path / "q.npy", "--k", 7, "--per", "class",
                  "--out", out)
    assert result.exit_code == 0, result.output
    fused = pq.read_table(out).to_pydict()
    by_caption = pq.read_table(tmp_path / "set-image.parquet").to_pydict()
    caption_pairs = set(zip(by_caption["class_index"], by_caption["sample_id"], strict=True))
    fused_pairs = set(zip(fused["class_index"], fused["sample_id"], strict=True))
    assert caption_pairs <= fused_pairs and len(fused_pairs) > len(caption_pairs)
    assert json.loads((tmp_path / "fused.parquet.json").read_text())["selection"]["fused"] == ["t2i", "caption"]
    assert _cli("query", "--index", index, "--classes", tmp_path / "classes.json", "--mode", "t2i", "--fuse",
                "t2i,caption", "--query-embeddings", tmp_path / "q.npy", "--out", out).exit_code == 1


def test_frequency_command_writes_the_table_and_real_prompt_reads_it(caption_store, tmp_path):
    uri, captions = caption_store
    (tmp_path / "classes.json").write_text(json.dumps({c.name: list(c.synonyms) for c in CLASSES}))
    result = _cli("frequency", "--index", uri, "--classes", tmp_path / "classes.json", "--out", tmp_path / "f.csv")
    assert result.exit_code == 0, result.output
    rows = {r["class_name"]: r for r in csv.DictReader((tmp_path / "f.csv").open())}
    for c in CLASSES:
        assert int(rows[c.name]["count"]) == sum(any(brute_mentions(cap, n) for n in c.names) for cap in captions)
    assert "frequency -> " in result.output and "tail" in result.output
    # REAL-Prompt: each class prompted by its most frequent name only; results keep the class's own name
    from react_index.domain import load_classes, prompt_classes

    named = prompt_classes(load_classes(str(tmp_path / "classes.json")), "most-frequent", str(tmp_path / "f.csv"))
    best = {c.name: max(c.names, key=lambda n: sum(brute_mentions(cap, n) for cap in captions)) for c in CLASSES}
    assert [t.name for t in named] == [best[c.name] for c in CLASSES] and all(not t.synonyms for t in named)
    with pytest.raises(DomainError, match="needs --frequency"):
        prompt_classes(CLASSES, "most-frequent")


def test_a_caption_query_that_finds_nothing_fails_instead_of_writing_an_empty_set(caption_store, tmp_path):
    uri, _ = caption_store
    index = _index(tmp_path, uri)
    (tmp_path / "classes.txt").write_text("never seen\nunicorn\n")
    np.save(tmp_path / "q.npy", np.ones((2, DIM), np.float32))
    out = tmp_path / "none.parquet"
    result = _cli("query", "--index", index, "--classes", tmp_path / "classes.txt", "--mode", "caption",
                  "--query-embeddings", tmp_path / "q.npy", "--out", out)
    assert result.exit_code == 1 and "selected no rows for any of the 2 classes" in result.output
    assert "no caption names any class" in result.output and not out.exists()
