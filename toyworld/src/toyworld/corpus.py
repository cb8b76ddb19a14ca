"""The toy "web corpus": img2dataset-style webdataset shards of noisy image-text pairs.

Each shard `{shard:05d}.tar` holds, per sample, `{key}.jpg`, `{key}.txt` (the caption) and
`{key}.json` (img2dataset's fields plus the ground truth under "toy"). `toyworld.json` beside
the shards records the world, the shard list, the actual concept counts and any broken samples.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .captions import alt_text
from .draw import Placed, jpeg_bytes, render
from .tario import write_file, write_tar
from .world import STREAM_CORPUS, World

BROKEN_KINDS = ("corrupt_jpeg", "empty_caption", "truncated_tar")


def corpus_sample(world: World, index: int, image_size: int, pixels: bool = False) -> dict:
    """Sample `index` of the corpus: its concept, caption and JPEG bytes (a pure function of seed and index);
    `pixels` adds the rendered uint8 array (what the JPEG encodes: the same on every Pillow build)."""
    rng = world.rng(STREAM_CORPUS, index)
    freqs = world.class_frequencies()
    name = world.classes[rng.choice(len(freqs), p=freqs)]
    style, shape = world.split(name)
    colour = world.colours[rng.integers(len(world.colours))]
    texture = world.textures[rng.integers(len(world.textures))]
    bg = world.backgrounds[rng.integers(len(world.backgrounds))]
    radius = image_size * rng.uniform(0.22, 0.4)
    cx, cy = rng.uniform(radius, image_size - radius, 2)
    angle = rng.uniform(-np.pi / 6, np.pi / 6)
    img, _ = render(image_size, [Placed(shape, colour, cx, cy, radius, angle, style)], bg, texture, rng)
    caption, named = alt_text(world, rng, name, colour, texture, bg)
    sample = {"shape": shape, "colour": colour, "texture": texture, "background": bg,
              "caption": caption, "named_shape": named, "jpeg": jpeg_bytes(img)}
    if world.styles:  # the class ("striped octagon") and what the caption names: the class or only the shape
        sample |= {"style": style, "class": name, "named_shape": named and world.split(named)[1],
                   "named_class": named if named in world.classes else None}
    if pixels:
        sample["pixels"] = img
    return sample


def sample_key(shard: int, i: int) -> str:
    return f"{shard:05d}{i:04d}"  # img2dataset's key scheme


def _members(key: str, sample: dict, image_size: int) -> list[tuple[str, bytes]]:
    meta = {
        "url": f"https://toyworld.invalid/img/{key}.jpg",
        "key": key,
        "caption": sample["caption"],
        "status": "success",
        "width": image_size,
        "height": image_size,
        "toy": {k: sample[k] for k in ("shape", "colour", "texture", "background", "named_shape",
                                       "style", "class", "named_class") if k in sample},
    }
    return [
        (f"{key}.jpg", sample["jpeg"]),
        (f"{key}.txt", sample["caption"].encode()),
        (f"{key}.json", json.dumps(meta, sort_keys=True).encode()),
    ]


def write_corpus(out_dir: str | Path, world: World, n_samples: int, samples_per_shard: int = 1000,
                 image_size: int = 64, broken: tuple[str, ...] = ()) -> dict:
    """Write the corpus shards and `toyworld.json`; returns that summary. Same arguments, same bytes.

    `broken` adds deliberately bad data for bad-input tests: a corrupt JPEG and an empty caption
    appended to the last shard, and a truncated copy of the first shard as an extra shard.
    """
    if not 32 <= image_size <= 224:
        raise ValueError(f"image_size must be in 32..224, got {image_size}")
    unknown = set(broken) - set(BROKEN_KINDS)
    if unknown:
        raise ValueError(f"unknown broken kinds {sorted(unknown)}; choose from {BROKEN_KINDS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-n_samples // samples_per_shard))
    shape_counts, named_counts, class_counts = Counter(), Counter(), Counter()
    shards, bad = [], {kind: [] for kind in broken}
    bar = tqdm(total=n_samples, desc=f"toy world: corpus ({n_shards} shards)", unit="img", dynamic_ncols=True,
               disable=n_samples < 2_000)  # the tests' tiny worlds stay quiet
    for s in range(n_shards):
        members = []
        lo, hi = s * samples_per_shard, min(n_samples, (s + 1) * samples_per_shard)
        for index in range(lo, hi):
            sample = corpus_sample(world, index, image_size)
            shape_counts[sample["shape"]] += 1
            named_counts[sample["named_shape"] or "<none>"] += 1
            class_counts[sample.get("class")] += 1
            members += _members(sample_key(s, index - lo), sample, image_size)
            bar.update(1)
        if s == n_shards - 1:
            members += _broken_members(world, s, hi - lo, image_size, broken, bad)
        name = f"{s:05d}.tar"
        write_tar(out / name, members)
        shards.append({"name": name, "samples": len(members) // 3})
    bar.close()
    if "truncated_tar" in broken:
        name = f"{n_shards:05d}.tar"
        data = (out / shards[0]["name"]).read_bytes()
        write_file(out / name, data[: len(data) // 2 + 100])  # cut inside a member
        bad["truncated_tar"].append(name)
    summary = {
        "world": world.to_json(),
        "n_samples": n_samples,
        "image_size": image_size,
        "shards": shards,
        "shape_counts": {s: shape_counts[s] for s in world.shapes},
        "named_shape_counts": dict(sorted(named_counts.items())),
        **({"class_counts": {c: class_counts[c] for c in world.classes}} if world.styles else {}),
        "broken": bad,
    }
    write_file(out / "toyworld.json", json.dumps(summary, indent=2).encode())
    return summary


def _broken_members(world, shard, start, image_size, broken, bad):
    members = []
    if "corrupt_jpeg" in broken:
        key = sample_key(shard, start)
        sample = corpus_sample(world, 10**9, image_size)
        sample["jpeg"] = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2  # JPEG magic, then garbage
        members += _members(key, sample, image_size)
        bad["corrupt_jpeg"].append(key)
    if "empty_caption" in broken:
        key = sample_key(shard, start + 1)
        sample = corpus_sample(world, 10**9 + 1, image_size)
        sample["caption"] = ""
        members += _members(key, sample, image_size)
        bad["empty_caption"].append(key)
    return members
