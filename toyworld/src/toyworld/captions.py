"""Captions: noisy web alt-text for the corpus, clean descriptions for the retrieval eval set."""

from __future__ import annotations

import numpy as np

from .world import STYLE_SYNONYMS, SYNONYMS, World

_ALT_TEXT = (
    "{colour} {shape}",
    "{shape}",
    "a {colour} {shape} on a {texture} background",
    "{colour} {shape} icon",
    "{shape} clipart free download",
    "{Colour} {Shape} Sticker | Shop Now",
    "vector {shape} png {texture} pattern",
    "{shape} logo design {colour}",
    "stock image: {colour} {shape}, {bg} backdrop",
    "my {shape} drawing lol",
    "{texture} wallpaper with a {shape}",
    "buy {colour} {shape} decal",
)
_NO_SHAPE = (
    "{colour} abstract design",
    "{texture} {bg} background texture",
    "IMG_{num}.JPG",
    "untitled-{num}",
    "image",
    "best deals on {colour} stuff",
    "DSC{num}",
)
_NOISE = ("hd", "2021", "png", "jpg", "free", "#{num}", "wallpaper", "new", "sale", "4k", "©", "...")

_DESCRIPTIONS = (
    "a {colour} {shape} on a {texture} {bg} background.",
    "a picture of a {colour} {shape}.",
    "a {shape} coloured {colour} over a {bg} {texture} pattern.",
    "there is a {colour} {shape} in the image.",
    "a {texture} {bg} backdrop with a {colour} {shape}.",
    "a simple drawing of a {shape} in {colour}.",
)


def _fill(template: str, rng: np.random.Generator, shape: str, colour: str, texture: str, bg: str) -> str:
    return template.format(
        shape=shape, Shape=shape.title(), colour=colour, Colour=colour.title(),
        texture=texture, bg=bg, num=int(rng.integers(1000, 9999)),
    )


def alt_text(world: World, rng: np.random.Generator, name: str, colour: str, texture: str,
             bg: str) -> tuple[str, str | None]:
    """A noisy caption of a sample of class `name` and what it names (None if nothing; may be wrong by label
    noise): the class, or — in a world with styles, when the caption leaves the style out — only the shape."""
    u = rng.uniform()
    if u < world.uninformative:
        template = _NO_SHAPE[rng.integers(len(_NO_SHAPE))]
        return _fill(template, rng, name, colour, texture, bg), None
    named = name
    if u < world.uninformative + world.label_noise:
        named = str(rng.choice([s for s in world.classes if s != name]))
    style, shape = world.split(named)
    word = shape
    if rng.uniform() < 0.2:
        synonyms = SYNONYMS[shape]
        word = synonyms[rng.integers(len(synonyms))]
    if world.styles:  # extra draws only here, so a world without styles keeps its bytes
        if rng.uniform() < world.style_named:
            style_word = style
            if rng.uniform() < 0.2:
                style_word = STYLE_SYNONYMS[style][rng.integers(len(STYLE_SYNONYMS[style]))]
            word = f"{style_word} {word}"
        else:
            named = shape
    text = _fill(_ALT_TEXT[rng.integers(len(_ALT_TEXT))], rng, word, colour, texture, bg)
    for _ in range(rng.poisson(0.8)):
        text += " " + _NOISE[rng.integers(len(_NOISE))].format(num=int(rng.integers(10, 999)))
    if rng.uniform() < 0.1:
        text = text.upper()
    return text, named


def descriptions(rng: np.random.Generator, n: int, objects: list[tuple[str, str]], texture: str,
                 bg: str) -> list[str]:
    """n distinct clean captions of an image holding `objects` ((shape, colour) pairs)."""
    order = rng.permutation(len(_DESCRIPTIONS))[:n]
    (shape, colour), rest = objects[0], objects[1:]
    captions = []
    for i in order:
        text = _fill(_DESCRIPTIONS[i], rng, shape, colour, texture, bg)
        for other_shape, other_colour in rest:
            text = text[:-1] + f", and a {other_colour} {other_shape}."
        captions.append(text)
    return captions
