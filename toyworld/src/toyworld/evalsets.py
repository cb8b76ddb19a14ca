"""Toy evaluation sets, drawn from seed streams the corpus never uses (held out from retrieval).

- classification as an image folder (`{class}/{i}.jpg`, `classnames.txt`, `templates.txt`);
- the same images in CLIP_benchmark's wds layout (`test/nshards.txt`, `test/0.tar` with
  `.jpg` + `.cls`, `classnames.txt`, `zeroshot_classification_templates.txt`);
- caption retrieval in the Karpathy json format (several captions per image);
- detection in COCO format (several boxed objects per image) with a base/novel split.
Classes are balanced here: the long tail lives in the corpus, not in the eval sets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .captions import descriptions
from .draw import Placed, jpeg_bytes, mask_box, render
from .tario import write_file, write_tar
from .world import STREAM_CLASSIFICATION, STREAM_DETECTION, STREAM_RETRIEVAL, World

TEMPLATES = (
    "a photo of a {c}.",
    "a drawing of a {c}.",
    "a {c} shape.",
    "an icon of a {c}.",
    "clipart of a {c}.",
)


def _scene(world: World, rng: np.random.Generator):
    return (world.colours[rng.integers(len(world.colours))],
            world.textures[rng.integers(len(world.textures))],
            world.backgrounds[rng.integers(len(world.backgrounds))])


TRAIN_OFFSET = 500_000  # train-split images draw from indices the test split never reaches


def classification_samples(world: World, per_class: int, image_size: int, classes=None, first: int = 0):
    """(class index, class name, JPEG bytes) for `per_class` images of each class, classes sorted by name."""
    names = sorted(classes or world.classes)
    for c, name in enumerate(names):
        style, shape = world.split(name)
        for i in range(per_class):
            rng = world.rng(STREAM_CLASSIFICATION, world.classes.index(name) * 1_000_000 + first + i)
            colour, texture, bg = _scene(world, rng)
            radius = image_size * rng.uniform(0.22, 0.4)
            cx, cy = rng.uniform(radius, image_size - radius, 2)
            p = Placed(shape, colour, cx, cy, radius, rng.uniform(-np.pi / 6, np.pi / 6), style)
            img, _ = render(image_size, [p], bg, texture, rng)
            yield c, name, jpeg_bytes(img)


def _class_info(world: World, names: list[str]) -> dict:
    freqs = dict(zip(world.classes, world.class_frequencies().tolist(), strict=True))
    return {"world": world.to_json(), "classes": names,
            "corpus_frequency": {n: round(freqs[n], 6) for n in names}}


def write_classification_folder(out_dir, world: World, per_class: int = 20, image_size: int = 64,
                                classes=None, split: str = "test") -> Path:
    """The image-folder set; `split="train"` draws other images of the same classes (for linear probes)."""
    out = Path(out_dir)
    names = sorted(classes or world.classes)
    first = TRAIN_OFFSET if split == "train" else 0
    for i, (_, name, data) in enumerate(classification_samples(world, per_class, image_size, classes, first)):
        write_file(out / name / f"{i % per_class:05d}.jpg", data)
    write_file(out / "classnames.txt", ("\n".join(names) + "\n").encode())
    write_file(out / "templates.txt", ("\n".join(TEMPLATES) + "\n").encode())
    write_file(out / "toyworld.json", json.dumps(_class_info(world, names), indent=2).encode())
    return out


def write_classification_wds(out_dir, world: World, per_class: int = 20, image_size: int = 64,
                             classes=None, samples_per_shard: int = 500) -> Path:
    out = Path(out_dir)
    names = sorted(classes or world.classes)
    members = []
    for i, (c, _, data) in enumerate(classification_samples(world, per_class, image_size, classes)):
        key = f"s{i:07d}"
        members.append([(f"{key}.jpg", data), (f"{key}.cls", str(c).encode())])
    shards = [members[i:i + samples_per_shard] for i in range(0, len(members), samples_per_shard)]
    (out / "test").mkdir(parents=True, exist_ok=True)
    for s, shard in enumerate(shards):
        write_tar(out / "test" / f"{s}.tar", [m for sample in shard for m in sample])
    write_file(out / "test" / "nshards.txt", f"{len(shards)}\n".encode())
    write_file(out / "classnames.txt", ("\n".join(names) + "\n").encode())
    write_file(out / "zeroshot_classification_templates.txt", ("\n".join(TEMPLATES) + "\n").encode())
    write_file(out / "toyworld.json", json.dumps(_class_info(world, names), indent=2).encode())
    return out


def _place_objects(rng, world, image_size, n, shapes=None):
    """n shapes placed with little overlap (rejection sampling on centre distance)."""
    placed = []
    for _ in range(n):
        for _attempt in range(50):
            radius = image_size * rng.uniform(0.1, 0.2)
            cx, cy = rng.uniform(radius, image_size - radius, 2)
            if all(np.hypot(cx - p.cx, cy - p.cy) > 0.9 * (radius + p.radius) for p in placed):
                break
        name = world.classes[rng.integers(len(world.classes))] if shapes is None else shapes[len(placed)]
        colour = world.colours[rng.integers(len(world.colours))]
        style, shape = world.split(name)
        placed.append(Placed(shape, colour, cx, cy, radius, rng.uniform(-np.pi / 6, np.pi / 6), style))
    return placed


def _class_of(world: World, p: Placed) -> str:
    return f"{p.style} {p.shape}" if world.styles else p.shape


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9-]+", text.lower())


def write_retrieval(out_dir, world: World, n_images: int = 100, captions_per_image: int = 5,
                    image_size: int = 64) -> Path:
    """Images with several clean captions each, as Karpathy-format `captions.json` + `images/`."""
    out = Path(out_dir)
    images, sentid = [], 0
    for i in range(n_images):
        rng = world.rng(STREAM_RETRIEVAL, i)
        _, texture, bg = _scene(world, rng)
        objects = _place_objects(rng, world, image_size, int(rng.integers(1, 3)))
        img, _ = render(image_size, objects, bg, texture, rng)
        filename = f"{i:05d}.jpg"
        write_file(out / "images" / filename, jpeg_bytes(img))
        texts = descriptions(rng, captions_per_image, [(_class_of(world, p), p.colour) for p in objects], texture,
                             bg)
        sentences = [{"raw": t, "tokens": _tokens(t), "imgid": i, "sentid": sentid + j} for j, t in enumerate(texts)]
        images.append({"filepath": "images", "filename": filename, "imgid": i, "split": "test",
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
        sentid += len(sentences)
    write_file(out / "captions.json", json.dumps({"dataset": "toyworld", "images": images}, indent=1).encode())
    return out


def write_detection(out_dir, world: World, n_images: int = 50, image_size: int = 96,
                    objects_per_image: tuple[int, int] = (2, 4), n_novel: int | None = None) -> Path:
    """COCO-format `annotations.json` + `images/`, and `split.json` naming base and novel (rare) categories."""
    out = Path(out_dir)
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(world.classes)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for i in range(n_images):
        rng = world.rng(STREAM_DETECTION, i)
        _, texture, bg = _scene(world, rng)
        n = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        objects = _place_objects(rng, world, image_size, n)
        img, masks = render(image_size, objects, bg, texture, rng)
        filename = f"{i:05d}.jpg"
        write_file(out / "images" / filename, jpeg_bytes(img))
        images.append({"id": i + 1, "file_name": filename, "width": image_size, "height": image_size})
        for p, m in zip(objects, masks, strict=True):
            box = mask_box(m)
            if box is None:  # fully hidden by a later object
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": cat_id[_class_of(world, p)],
                                "bbox": list(box), "area": float((m >= 0.5).sum()), "iscrowd": 0})
    coco = {"info": {"description": "toyworld detection", "version": "1"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}
    write_file(out / "annotations.json", json.dumps(coco, indent=1).encode())
    n_novel = len(world.classes) // 4 if n_novel is None else n_novel
    novel = sorted(world.rare_classes(n_novel), key=world.classes.index) if n_novel else []
    split = {"base": [s for s in world.classes if s not in novel], "novel": novel}
    write_file(out / "split.json", json.dumps(split, indent=2).encode())
    return out
