"""The deterministic toy world: a long-tailed web corpus of shapes and held-out eval sets.

Dev/test support shared by the three packages' tests, the demo and the benchmarks; no
package depends on it. Same seed, same bytes.
"""

from .corpus import BROKEN_KINDS, corpus_sample, write_corpus
from .evalsets import (
    TEMPLATES,
    write_classification_folder,
    write_classification_wds,
    write_detection,
    write_retrieval,
)
from .generate import PRESETS, preset_world, write_world
from .world import SHAPES, STYLES, World

__all__ = [
    "BROKEN_KINDS", "PRESETS", "SHAPES", "STYLES", "TEMPLATES", "World", "corpus_sample", "preset_world",
    "write_classification_folder", "write_classification_wds", "write_corpus", "write_detection", "write_retrieval",
    "write_world",
]
