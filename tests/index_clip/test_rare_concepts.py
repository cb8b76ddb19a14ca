"""Retrieval for rare concepts with the toy-pretrained base CLIP, scored against the toy world's ground truth.

The four rarest shapes are each ≈1.2 % of the 12,000-pair corpus (143–161 pairs): a query that returned
corpus pairs at random would be right ≈1.2 % of the time. The base model is weakest exactly on these shapes
(it saw few of them), so this is the hard case of REACT's retrieval, not the easy one.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from repro_lib import judged_rows, true_shapes

from toyworld import World
from toyworld.models import BASE, CONFIG_DIR, base_weights

RARE = World().rare_shapes(4)


def _cli(*args):
    subprocess.run([str(Path(sys.executable).parent / "react-index"), *map(str, args)], check=True,
                   capture_output=True, text=True)


@pytest.fixture(scope="module")
def index(demo_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("rare") / "index"
    _cli("build", f"{demo_world}/corpus/{{00000..00011}}.tar", "--out", out, "--model", BASE,
         "--pretrained", base_weights(), "--model-config", CONFIG_DIR / f"{BASE}.json", "--workers", "1")
    return out


@pytest.fixture(scope="module")
def truth(index):
    return true_shapes(index)


def _precision(index: Path, truth: np.ndarray, demo_world: Path, mode: str, tmp: Path) -> tuple[float, dict]:
    (tmp / "rare.txt").write_text("\n".join(RARE) + "\n")
    out = tmp / f"{mode}.parquet"
    _cli("query", "--index", index, "--classes", tmp / "rare.txt", "--mode", mode, "--per", "class", "--k", 10,
         "--templates", demo_world / "eval" / "classification" / "templates.txt",
         "--model-config", CONFIG_DIR / f"{BASE}.json", "--out", out)
    names, right = judged_rows(out, truth)
    assert sorted(set(names)) == sorted(RARE) and len(names) == 40  # 10 per class, prompt-ensemble query
    return float(right.mean()), {c: float(right[names == c].mean()) for c in RARE}


def test_rare_concept_query_returns_mostly_those_concepts(index, truth, demo_world, tmp_path):
    # t2t (prompts vs captions): measured 0.70 overall, every class ≥ 0.6. "Mostly" = more than half, ≈ 50×
    # what random pairs give; each class at least 4 of its 10.
    precision, per_class = _precision(index, truth, demo_world, "t2t", tmp_path)
    assert precision > 0.5, per_class
    assert min(per_class.values()) >= 0.4, per_class
    # t2i (prompts vs images), REACT's default, is weaker with this base on its rarest concepts: measured 0.40
    # (octagon 0.0). Still far above random; the gap is what docs/reproduction.md discusses.
    precision_t2i, per_class_t2i = _precision(index, truth, demo_world, "t2i", tmp_path)
    assert precision_t2i > 0.2, per_class_t2i
