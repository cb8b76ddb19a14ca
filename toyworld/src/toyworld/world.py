"""The toy world's vocabulary and its long-tailed concept frequencies.

A concept is a shape (the "object class" a CLIP model must learn to name), or — in a world with `styles`
(the `longtail` preset) — a shape drawn in a fill style ("striped octagon": 16 shapes × 4 styles = 64 classes).
Each sample also has a colour and a background texture, so captions and images vary beyond the class.
Class frequencies follow a Zipf law, so some classes are rare in the web corpus — the situation REACT is
built for: a target domain that is under-represented in the data the base model was pretrained on. Without
styles the rank order is `SHAPES`' order (the last shapes are the rarest); with styles it is a seeded shuffle
of the classes, so a rare "striped octagon" can share its shape with a frequent "solid octagon".
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

# Fill styles (the attribute of a shape × attribute world) and the words alt-text may use for them.
STYLES = ("solid", "hollow", "striped", "bicolor")
STYLE_SYNONYMS = {
    "solid": ("filled",),
    "hollow": ("outlined", "outline"),
    "striped": ("stripy", "banded"),
    "bicolor": ("two-colour", "half-and-half"),
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
    styles: tuple[str, ...] = ()  # empty: classes are shapes; else every "style shape" pair is a class
    style_named: float = 0.7  # with styles: share of shape-naming captions that also name the style

    def __post_init__(self):
        unknown = [s for s in self.shapes if s not in SHAPES] + [s for s in self.styles if s not in STYLES]
        if unknown:
            raise ValueError(f"unknown shapes or styles {unknown}; known: {', '.join(SHAPES + STYLES)}")
        if len(set(self.shapes)) != len(self.shapes) or len(set(self.styles)) != len(self.styles):
            raise ValueError("shapes and styles must be distinct")

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in definition order: the shapes, or "style shape" for every shape and style."""
        return self.shapes if not self.styles else tuple(f"{st} {sh}" for sh in self.shapes for st in self.styles)

    def split(self, name: str) -> tuple[str, str]:
        """(style, shape) of a class name; a world without styles draws every shape "solid"."""
        style, _, shape = name.rpartition(" ") if self.styles else ("solid", "", name)
        return style, shape

    def shape_frequencies(self) -> np.ndarray:
        """Probability of each shape in the web corpus (Zipf: p_k ∝ 1 / (k+1)^s)."""
        ranks = np.arange(1, len(self.shapes) + 1, dtype=np.float64)
        weights = ranks ** -self.zipf_exponent
        return weights / weights.sum()

    def class_frequencies(self) -> np.ndarray:
        """Probability of each class (in `classes` order) in the web corpus: Zipf over the frequency ranks."""
        if not self.styles:
            return self.shape_frequencies()
        n = len(self.classes)
        ranks = np.random.default_rng([self.seed, 1_000]).permutation(n) + 1.0  # class i has rank ranks[i]
        weights = ranks ** -self.zipf_exponent
        return weights / weights.sum()

    def classes_by_frequency(self) -> tuple[str, ...]:
        """The classes, most frequent first."""
        order = np.argsort(-self.class_frequencies(), kind="stable")
        return tuple(self.classes[i] for i in order)

    def rare_classes(self, n: int) -> tuple[str, ...]:
        """The n least frequent classes (most frequent of them first): the natural REACT target domain."""
        return self.classes_by_frequency()[-n:]

    def rare_shapes(self, n: int) -> tuple[str, ...]:
        """The n least frequent shapes of a world without styles (`rare_classes` for any world)."""
        return self.shapes[-n:]

    def rng(self, stream: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, index])

    def to_json(self) -> dict:
        data = asdict(self)
        if not self.styles:  # a world without styles writes exactly what it wrote before styles existed
            del data["styles"], data["style_named"]
            data["shape_frequencies"] = self.shape_frequencies().round(6).tolist()
        else:
            data["class_frequencies"] = dict(zip(self.classes, self.class_frequencies().round(6).tolist(),
                                                 strict=True))
        return data
