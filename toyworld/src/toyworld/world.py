"""The toy world's vocabulary and its long-tailed concept frequencies.

A concept is a shape (the "object class" a CLIP model must learn to name).
Each sample also has a colour and a background texture, so captions and
images vary beyond the class. Shape frequencies follow a Zipf law, so the
shapes at the end of `SHAPES` are rare in the web corpus — the situation
REACT is built for: a target domain that is under-represented in the data
the base model was pretrained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SHAPES = (
    "circle", "square", "triangle", "diamond", "cross", "ring", "star", "hexagon",
    "heart", "arrow", "crescent", "pentagon", "octagon", "semicircle", "trapezoid", "chevron",
)

# Names a caption writer might use instead of the class name.
SYNONYMS = {
    "circle": ("round dot", "disc"),
    "square": ("box", "tile"),
    "triangle": ("delta",),
    "diamond": ("rhombus", "lozenge"),
    "cross": ("plus sign",),
    "ring": ("donut", "hoop"),
    "star": ("five-pointed star",),
    "hexagon": ("six-sided polygon",),
    "heart": ("love heart",),
    "arrow": ("pointer",),
    "crescent": ("crescent moon",),
    "pentagon": ("five-sided polygon",),
    "octagon": ("stop-sign shape",),
    "semicircle": ("half circle",),
    "trapezoid": ("trapezium",),
    "chevron": ("caret",),
}

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}

TEXTURES = ("plain", "striped", "dotted", "checkered", "gradient", "noisy")

# Background base colours; a sample's background never equals its shape colour.
BACKGROUNDS = {
    "grey": (128, 128, 128),
    "beige": (225, 210, 180),
    "sky": (150, 200, 235),
    "mint": (170, 225, 190),
    "navy": (30, 40, 90),
    "pink": (240, 180, 200),
}

# Seed streams: every generated item draws from np.random.default_rng([seed, stream, index]),
# so an item's bytes depend only on (seed, stream, index), never on shard layout or order,
# and evaluation images never coincide with corpus images.
STREAM_CORPUS, STREAM_CLASSIFICATION, STREAM_RETRIEVAL, STREAM_DETECTION = 0, 1, 2, 3


@dataclass(frozen=True)
class World:
    """What concepts exist and how often the web corpus shows each."""

    shapes: tuple[str, ...] = SHAPES
    zipf_exponent: float = 1.3
    label_noise: float = 0.03  # caption names a wrong shape
    uninformative: float = 0.15  # caption names no shape at all
    seed: int = 0
    colours: tuple[str, ...] = field(default_factory=lambda: tuple(COLOURS))
    textures: tuple[str, ...] = TEXTURES
    backgrounds: tuple[str, ...] = field(default_factory=lambda: tuple(BACKGROUNDS))

    def __post_init__(self):
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown:
            raise ValueError(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
        if len(set(self.shapes)) != len(self.shapes):
            raise ValueError("shapes must be distinct")

    def shape_frequencies(self) -> np.ndarray:
        """Probability of each shape in the web corpus (Zipf: p_k ∝ 1 / (k+1)^s)."""
        ranks = np.arange(1, len(self.shapes) + 1, dtype=np.float64)
        weights = ranks ** -self.zipf_exponent
        return weights / weights.sum()

    def rare_shapes(self, n: int) -> tuple[str, ...]:
        """The n least frequent shapes: the natural REACT target domain."""
        return self.shapes[-n:]

    def rng(self, stream: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, index])

    def to_json(self) -> dict:
        return asdict(self) | {"shape_frequencies": self.shape_frequencies().round(6).tolist()}
