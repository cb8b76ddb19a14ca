"""Presets and `write_world`: the corpus and every eval set under one root, skipped when already there."""

from __future__ import annotations

import json
from pathlib import Path

from .corpus import write_corpus
from .evalsets import write_classification_folder, write_classification_wds, write_detection, write_retrieval
from .tario import write_file
from .world import World

PRESETS = {
    # unit tests: seconds to generate
    "tiny": {"n_samples": 400, "samples_per_shard": 100, "image_size": 32, "per_class": 4,
             "retrieval_images": 24, "detection_images": 12, "detection_size": 64},
    # the README demo and the e2e test
    "demo": {"n_samples": 12000, "samples_per_shard": 1000, "image_size": 64, "per_class": 40,
             "retrieval_images": 200, "detection_images": 100, "detection_size": 96},
}


def write_world(root: str | Path, preset: str = "tiny", seed: int = 0, broken: tuple[str, ...] = ()) -> dict:
    """Write `root/corpus/` and the eval sets under `root/eval/`: classification (+ its _train split and
    _wds copy), retrieval, detection.

    A rerun with the same arguments finds `root/toyworld-done.json` and returns at once. Returns the request
    (preset sizes, seed, broken kinds) with `reused`: whether the world was already there.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    root = Path(root)
    p = PRESETS[preset]
    request = {"preset": preset, "seed": seed, "broken": sorted(broken), **p}
    done = root / "toyworld-done.json"
    if done.exists() and json.loads(done.read_text()) == request:
        return request | {"reused": True}
    world = World(seed=seed)
    write_corpus(root / "corpus", world, p["n_samples"], p["samples_per_shard"], p["image_size"], broken)
    ev = root / "eval"
    write_classification_folder(ev / "classification", world, p["per_class"], p["image_size"])
    write_classification_folder(ev / "classification_train", world, p["per_class"], p["image_size"], split="train")
    write_classification_wds(ev / "classification_wds", world, p["per_class"], p["image_size"])
    write_retrieval(ev / "retrieval", world, p["retrieval_images"], image_size=p["image_size"])
    write_detection(ev / "detection", world, p["detection_images"], p["detection_size"])
    write_file(done, json.dumps(request, indent=2).encode())
    return request | {"reused": False}
