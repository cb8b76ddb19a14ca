"""The longtail preset (reproduction v2's world): 64 shape × style classes with a web-like long tail over 100,000
pairs, the same bytes every time."""

import hashlib
import json
from collections import Counter

import numpy as np

from toyworld import PRESETS, SHAPES, STYLES, World, corpus_sample, preset_world, write_corpus
from toyworld.draw import Placed, render
from toyworld.evalsets import write_classification_folder

# sha256 over the first 200 corpus samples' rendered pixels, captions and ground truth (JPEG bytes are left out:
# they are the same only for one Pillow build). A change to the generator that changes the world changes this.
FIRST_200_DIGEST = "9d531f2dd083d9ca12ae484570ad8a8e404d48dbc3da028f0e8fb843c0982d9c"


def _digest(world: World, n: int) -> str:
    h = hashlib.sha256()
    for i in range(n):
        s = corpus_sample(world, i, PRESETS["longtail"]["image_size"], pixels=True)
        h.update(s.pop("pixels").tobytes())
        s.pop("jpeg")
        h.update(json.dumps(s, sort_keys=True).encode())
    return h.hexdigest()


def test_longtail_world_has_64_shape_style_classes_with_a_zipf_tail():
    world = preset_world("longtail")
    assert PRESETS["longtail"]["n_samples"] >= 100_000
    assert len(world.classes) == 64 and set(world.classes) == {f"{st} {sh}" for sh in SHAPES for st in STYLES}
    freqs = world.class_frequencies()
    ranked = np.sort(freqs)[::-1]
    assert np.allclose(ranked / ranked[0], 1 / np.arange(1, 65))  # Zipf, exponent 1
    order = list(world.classes_by_frequency())
    assert world.rare_classes(16) == tuple(order[-16:])
    shapes_in_tail = Counter(world.split(c)[1] for c in world.rare_classes(16))
    assert len(shapes_in_tail) > 8  # a shuffled tail: rare classes share shapes with frequent ones


def test_class_counts_over_the_whole_preset_are_a_long_tail():
    """The class of corpus sample i is the first draw of its generator: count all 100,000 without drawing them,
    then check the generator writes those classes."""
    world, n = preset_world("longtail"), PRESETS["longtail"]["n_samples"]
    freqs = world.class_frequencies()
    classes = [world.classes[np.random.default_rng([world.seed, 0, i]).choice(64, p=freqs)] for i in range(n)]
    counts = Counter(classes)
    tail = [counts[c] for c in world.rare_classes(16)]
    assert 250 <= min(tail) and max(tail) <= 500, tail  # a few hundred pairs per target class
    assert counts[world.classes_by_frequency()[0]] > 15_000
    assert sum(counts.values()) == n and len(counts) == 64


def test_generated_samples_carry_their_class_and_captions_name_it(tmp_path):
    world = preset_world("longtail")
    summary = write_corpus(tmp_path, world, 400, samples_per_shard=5000, image_size=32)
    freqs = world.class_frequencies()
    expected = Counter(world.classes[np.random.default_rng([world.seed, 0, i]).choice(64, p=freqs)]
                       for i in range(400))
    assert summary["class_counts"] == {c: expected[c] for c in world.classes}
    samples = [corpus_sample(world, i, 32) for i in range(400)]
    named = [s for s in samples if s["named_class"]]
    assert 0.4 < len(named) / 400 < 0.75  # 82 % name a shape, 70 % of those the style too
    assert sum(s["named_class"] == s["class"] for s in named) / len(named) > 0.9  # label noise 3 %
    assert all(s["named_shape"] is None or s["named_shape"] in SHAPES for s in samples)


def test_longtail_preset_is_reproducible_byte_for_byte(tmp_path):
    world = preset_world("longtail")
    for name in ("a", "b"):
        write_corpus(tmp_path / name / "corpus", world, 120, samples_per_shard=50, image_size=32)
        write_classification_folder(tmp_path / name / "eval", world, per_class=1, image_size=32)
    files = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in sorted((tmp_path / "a").rglob("*")) if p.is_file()}
    assert len(files) > 64
    assert all((tmp_path / "b" / rel).read_bytes() == data for rel, data in files.items())
    assert _digest(world, 200) == FIRST_200_DIGEST
    assert _digest(preset_world("longtail", seed=1), 5) != _digest(world, 5)  # the digest can tell worlds apart


def test_styles_draw_differently():
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    solid, hollow, striped, bicolor = (render(32, [Placed("square", "red", 16, 16, 12, 0.0, style)], "grey",
                                              "plain", rng()) for style in STYLES)
    assert solid[0].shape == (32, 32, 3)
    assert 0.25 < hollow[1][0].sum() / solid[1][0].sum() < 0.75  # an outline, not a filled shape
    reds = lambda img: int(((img[..., 0] > 150) & (img[..., 1] < 100)).sum())  # noqa: E731
    assert reds(striped[0]) < 0.75 * reds(solid[0]) and reds(bicolor[0]) < 0.75 * reds(solid[0])
    assert reds(striped[0]) > 0.25 * reds(solid[0]) and reds(bicolor[0]) > 0.25 * reds(solid[0])
