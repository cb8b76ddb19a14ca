"""Presets and `write_world`: the corpus and every eval set under one root, skipped when already there."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from .corpus import write_corpus
from .evalsets import write_classification_folder, write_classification_wds, write_detection, write_retrieval
from .tario import write_file
from .world import STYLES, World

PRESETS = {
    # unit tests: seconds to generate
    "tiny": {"n_samples": 400, "samples_per_shard": 100, "image_size": 32, "per_class": 4,
             "retrieval_images": 24, "detection_images": 12, "detection_size": 64},
    # the README demo and the e2e test
    "demo": {"n_samples": 12000, "samples_per_shard": 1000, "image_size": 64, "per_class": 40,
             "retrieval_images": 200, "detection_images": 100, "detection_size": 96},
    # reproduction v2 (docs/reproduction.md): 64 shape × style classes, a Zipf-1 long tail, 100,000 pairs at 32 px
    "longtail": {"n_samples": 100_000, "samples_per_shard": 5000, "image_size": 32, "per_class": 40,
                 "retrieval_images": 200, "detection_images": 100, "detection_size": 64,
                 "world": {"styles": list(STYLES), "zipf_exponent": 1.0}},
}


def preset_world(preset: str, seed: int = 0) -> World:
    """The `World` a preset generates (its concepts and frequencies) without generating anything."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    params = dict(PRESETS[preset].get("world", {}))
    if "styles" in params:
        params["styles"] = tuple(params["styles"])
    return World(seed=seed, **params)


def write_world(root: str | Path, preset: str = "tiny", seed: int = 0, broken: tuple[str, ...] = ()) -> dict:
    """Write `root/corpus/` and the eval sets under `root/eval/`: classification (+ its _train split and
    _wds copy), retrieval, detection.

    A rerun with the same arguments finds `root/toyworld-done.json` and returns at once. Returns the request
    (preset sizes, seed, broken kinds) with `reused`: whether the world was already there.
    """
    world = preset_world(preset, seed)
    root = Path(root)
    p = PRESETS[preset]
    request = {"preset": preset, "seed": seed, "broken": sorted(broken), **p}
    done = root / "toyworld-done.json"
    if done.exists() and json.loads(done.read_text()) == request:
        return request | {"reused": True}
    quiet = p["n_samples"] < 2_000  # the tests' tiny worlds take a second; the demo's take minutes
    if not quiet:
        print(f"toy world ({preset}): {p['n_samples']:,} corpus images, then 5 evaluation sets -> {root}", flush=True)
    write_corpus(root / "corpus", world, p["n_samples"], p["samples_per_shard"], p["image_size"], broken)
    ev = root / "eval"
    steps = [
        ("classification", lambda: write_classification_folder(ev / "classification", world, p["per_class"],
                                                               p["image_size"])),
        ("classification_train", lambda: write_classification_folder(ev / "classification_train", world,
                                                                     p["per_class"], p["image_size"], split="train")),
        ("classification_wds", lambda: write_classification_wds(ev / "classification_wds", world, p["per_class"],
                                                                p["image_size"])),
        ("retrieval", lambda: write_retrieval(ev / "retrieval", world, p["retrieval_images"],
                                              image_size=p["image_size"])),
        ("detection", lambda: write_detection(ev / "detection", world, p["detection_images"], p["detection_size"])),
    ]
    bar = tqdm(steps, desc="toy world: eval sets", unit="set", dynamic_ncols=True, disable=quiet)
    for name, write in bar:
        bar.set_postfix_str(name)
        write()
    write_file(done, json.dumps(request, indent=2).encode())
    return request | {"reused": False}
