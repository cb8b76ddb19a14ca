"""Render toy images: shapes over textured backgrounds, as uint8 arrays and JPEG bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .world import BACKGROUNDS, COLOURS

SUPERSAMPLE = 4  # masks are drawn at 4x and averaged down, which anti-aliases edges


@dataclass(frozen=True)
class Placed:
    """One shape placed in an image; coordinates in pixels of the final image."""

    shape: str
    colour: str
    cx: float
    cy: float
    radius: float
    angle: float  # radians
    style: str = "solid"  # fill style (world.STYLES): solid, hollow, striped, bicolor


def _circle(n=48, r=1.0, dx=0.0):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t) + dx, r * np.sin(t)], 1)


def _regular(n, start=np.pi / 2):
    t = start + np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(points=5, inner=0.42):
    t = np.pi / 2 + np.linspace(0, 2 * np.pi, 2 * points, endpoint=False)
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _heart(n=64):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y + 2.5], 1) / 17.0


def _pts(*xy):
    return np.array(xy, dtype=np.float64)


# Each shape: (filled polygons, holes) in unit coordinates, y pointing up.
_OUTLINES = {
    "circle": ([_circle()], []),
    "square": ([_regular(4, np.pi / 4)], []),
    "triangle": ([_regular(3)], []),
    "diamond": ([_pts((0, 1), (0.58, 0), (0, -1), (-0.58, 0))], []),
    "cross": ([_pts((-0.3, 1), (0.3, 1), (0.3, 0.3), (1, 0.3), (1, -0.3), (0.3, -0.3), (0.3, -1),
                    (-0.3, -1), (-0.3, -0.3), (-1, -0.3), (-1, 0.3), (-0.3, 0.3))], []),
    "ring": ([_circle()], [_circle(r=0.55)]),
    "star": ([_star()], []),
    "hexagon": ([_regular(6, 0)], []),
    "heart": ([_heart()], []),
    "arrow": ([_pts((-1, 0.22), (0.15, 0.22), (0.15, 0.6), (1, 0), (0.15, -0.6), (0.15, -0.22),
                    (-1, -0.22))], []),
    "crescent": ([_circle()], [_circle(r=0.85, dx=0.45)]),
    "pentagon": ([_regular(5)], []),
    "octagon": ([_regular(8, np.pi / 8)], []),
    "semicircle": ([_circle(48)[:25] - [0, 0.35]], []),  # the upper half-disc, centred
    "trapezoid": ([_pts((-1, -0.55), (1, -0.55), (0.5, 0.55), (-0.5, 0.55))], []),
    "chevron": ([_pts((-1, 0.5), (0, -0.2), (1, 0.5), (1, -0.05), (0, -0.75), (-1, -0.05))], []),
}


def shape_mask(p: Placed, size: int) -> np.ndarray:
    """Coverage of shape `p` in a size x size image, float32 in [0, 1]."""
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    rot = np.array([[np.cos(p.angle), -np.sin(p.angle)], [np.sin(p.angle), np.cos(p.angle)]])
    fills, holes = _OUTLINES[p.shape]
    for polygons, value in ((fills, 255), (holes, 0)):
        for poly in polygons:
            xy = poly @ rot.T * p.radius
            px = (p.cx + xy[:, 0]) * SUPERSAMPLE
            py = (p.cy - xy[:, 1]) * SUPERSAMPLE
            draw.polygon(list(zip(px.tolist(), py.tolist(), strict=True)), fill=value)
    arr = np.asarray(mask, dtype=np.float32)
    if p.style == "hollow":  # keep an outline: remove the shape eroded by the stroke width
        stroke = max(1.5, 0.2 * p.radius) * SUPERSAMPLE
        arr = arr * ~_erode(arr >= 128, round(stroke))
    return arr.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3)) / 255.0


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary erosion by `steps` 4-neighbour steps (a diamond of radius `steps`)."""
    for _ in range(steps):
        inner = mask.copy()
        inner[1:] &= mask[:-1]
        inner[:-1] &= mask[1:]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        mask = inner
    return mask


def fill_pattern(p: Placed, size: int) -> np.ndarray:
    """Where a striped or bicolor shape shows its own colour (1) rather than the complement (0), per pixel.

    Measured in the shape's frame, so the pattern turns with the shape: stripes across its vertical axis
    (period ≥ 4 px), or its upper half in its colour and its lower half in the complement.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    up = -(xx - p.cx) * np.sin(p.angle) - (yy - p.cy) * np.cos(p.angle)  # along the shape's y axis (up)
    if p.style == "striped":
        half = max(2.0, p.radius / 4)
        return (np.floor(up / half) % 2 == 0).astype(np.float32)
    if p.style == "bicolor":
        return (up >= 0).astype(np.float32)
    raise ValueError(f"style {p.style!r} has no fill pattern")


def background(size: int, name: str, texture: str, rng: np.random.Generator) -> np.ndarray:
    base = np.array(BACKGROUNDS[name], dtype=np.float32)
    alt = np.clip(base * 0.6 + 40, 0, 255)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = float(rng.uniform(size / 10, size / 4))
    if texture == "plain":
        pattern = np.zeros((size, size), np.float32)
    elif texture == "striped":
        direction = rng.integers(3)
        coord = (xx, yy, xx + yy)[direction]
        pattern = ((coord // (period / 2)) % 2).astype(np.float32)
    elif texture == "dotted":
        dx, dy = (xx % period) - period / 2, (yy % period) - period / 2
        pattern = ((dx * dx + dy * dy) < (period / 4) ** 2).astype(np.float32)
    elif texture == "checkered":
        pattern = (((xx // period) + (yy // period)) % 2).astype(np.float32)
    elif texture == "gradient":
        pattern = (xx + yy) / (2 * size - 2)
    elif texture == "noisy":
        pattern = rng.uniform(0, 1, (size, size)).astype(np.float32)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    img = base * (1 - pattern[..., None]) + alt * pattern[..., None]
    return img


def render(size: int, objects: list[Placed], bg: str, texture: str,
           rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw `objects` in order over a background; returns the image and each object's visible mask."""
    img = background(size, bg, texture, rng)
    masks = []
    for p in objects:
        m = shape_mask(p, size)
        jitter = rng.uniform(-18, 18, 3)
        fg = np.clip(np.array(COLOURS[p.colour], np.float32) + jitter, 0, 255)
        if p.style in ("striped", "bicolor"):
            own = fill_pattern(p, size)[..., None]
            fg = fg * own + (255 - fg) * (1 - own)  # the colour and its complement
        img = img * (1 - m[..., None]) + fg * m[..., None]
        masks = [prev * (1 - m) for prev in masks]  # later objects occlude earlier ones
        masks.append(m)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), masks


def mask_box(mask: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float, float] | None:
    """Tight [x, y, w, h] box (COCO convention) of the pixels a mask covers at least `threshold`."""
    ys, xs = np.nonzero(mask >= threshold)
    if len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return float(x0), float(y0), float(xs.max() + 1 - x0), float(ys.max() + 1 - y0)


def jpeg_bytes(img: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
