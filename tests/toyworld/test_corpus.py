import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toyworld import SHAPES, World, corpus_sample, write_corpus, write_world


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_world(tmp_path):
    write_world(tmp_path / "a", "tiny", seed=7)
    write_world(tmp_path / "b", "tiny", seed=7)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 100
    assert [k for k in a if a[k] != b[k]] == []
    write_world(tmp_path / "c", "tiny", seed=8)
    c = _files(tmp_path / "c")
    assert a["corpus/00000.tar"] != c["corpus/00000.tar"]


def test_a_sample_depends_only_on_seed_and_index_not_on_sharding(tmp_path):
    write_corpus(tmp_path / "x", World(), 30, samples_per_shard=10, image_size=32)
    write_corpus(tmp_path / "y", World(), 30, samples_per_shard=30, image_size=32)
    with tarfile.open(tmp_path / "x" / "00002.tar") as t:
        jpg = t.extractfile("000020005.jpg").read()
    with tarfile.open(tmp_path / "y" / "00000.tar") as t:
        assert t.extractfile("000000025.jpg").read() == jpg == corpus_sample(World(), 25, 32)["jpeg"]


def test_shards_are_img2dataset_style_and_readable_by_tarfile(toy_root):
    summary = json.loads((toy_root / "corpus" / "toyworld.json").read_text())
    assert [s["name"] for s in summary["shards"]] == [f"{i:05d}.tar" for i in range(4)]
    seen = 0
    for shard in summary["shards"]:
        with tarfile.open(toy_root / "corpus" / shard["name"]) as tar:
            names = tar.getnames()
            keys = sorted({n.rsplit(".", 1)[0] for n in names})
            assert len(keys) == shard["samples"] == 100
            for key in keys:
                assert {f"{key}.jpg", f"{key}.txt", f"{key}.json"} <= set(names)
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                caption = tar.extractfile(f"{key}.txt").read().decode()
                assert meta["key"] == key and meta["caption"] == caption and caption
                assert meta["toy"]["shape"] in SHAPES and meta["url"].endswith(f"/{key}.jpg")
                img = Image.open(io.BytesIO(tar.extractfile(f"{key}.jpg").read()))
                assert img.format == "JPEG" and img.size == (32, 32)
                seen += 1
    assert seen == summary["n_samples"] == 400


def test_concept_frequencies_follow_the_long_tail(tmp_path):
    world = World()
    n = 4000
    summary = write_corpus(tmp_path, world, n, samples_per_shard=2000, image_size=32)
    counts = np.array([summary["shape_counts"][s] for s in world.shapes])
    expected = world.shape_frequencies() * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 37.7  # chi-square, 15 degrees of freedom, p = 0.001: counts fit the Zipf law
    assert counts.sum() == n
    assert counts[0] > 20 * counts[-1]  # the head is common, the tail rare
    assert counts[-4:].sum() / n < 0.06  # the four rarest shapes: under 6 % of the corpus together


def test_captions_are_noisy_but_mostly_name_the_shape(tmp_path):
    world = World()
    samples = [corpus_sample(world, i, 32) for i in range(1500)]
    named = [s["named_shape"] for s in samples]
    right = np.mean([n == s["shape"] for n, s in zip(named, samples, strict=True)])
    none = np.mean([n is None for n in named])
    wrong = 1 - right - none
    assert abs(none - world.uninformative) < 0.03
    assert abs(wrong - world.label_noise) < 0.015
    assert len({s["caption"] for s in samples}) > 1200  # alt-text varies


def test_broken_samples_on_request(tmp_path):
    summary = write_corpus(tmp_path, World(), 20, samples_per_shard=10, image_size=32,
                           broken=("corrupt_jpeg", "empty_caption", "truncated_tar"))
    bad = summary["broken"]
    with tarfile.open(tmp_path / "00001.tar") as tar:
        with pytest.raises(Exception, match="cannot identify image file"):
            Image.open(io.BytesIO(tar.extractfile(bad["corrupt_jpeg"][0] + ".jpg").read())).load()
        assert tar.extractfile(bad["empty_caption"][0] + ".txt").read() == b""
    assert bad["truncated_tar"] == ["00002.tar"]
    with pytest.raises(tarfile.ReadError), tarfile.open(tmp_path / "00002.tar") as tar:
        for member in tar:
            tar.extractfile(member).read()
    with pytest.raises(ValueError, match="unknown broken kinds"):
        write_corpus(tmp_path, World(), 5, broken=("bad_vibes",))


def test_rejects_image_sizes_outside_32_to_224(tmp_path):
    with pytest.raises(ValueError, match="image_size must be in 32..224"):
        write_corpus(tmp_path, World(), 5, image_size=16)


def test_rerun_of_write_world_is_a_no_op(tmp_path):
    assert not write_world(tmp_path, "tiny")["reused"]
    shard = tmp_path / "corpus" / "00000.tar"
    before = shard.stat().st_mtime_ns
    assert write_world(tmp_path, "tiny")["reused"]
    assert shard.stat().st_mtime_ns == before
