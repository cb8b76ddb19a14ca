"""Image bytes from where a row points, and decoding them the same way everywhere.

Vendored into every package as `_imagerows.py` by `nox -s vendor` (edit this source, never a copy).

A row locates its image by a tar member (uri + byte offset + length: members are stored uncompressed, so a
ranged read returns the file), a file (uri), or only a URL. Failures come in two kinds that are counted
apart: MissingImage (not found, short read, URL-only) and CorruptImage (bytes that do not decode).
Pillow is imported only when decoding (react-index's core installs without it).
"""

from __future__ import annotations

import io
import warnings

import fsspec

from ._manifests import UserError

# Refuse images above this many pixels (Pillow's own default guard is 89M; a decompression bomb is far above).
MAX_PIXELS = 178_956_970


class MissingImage(OSError):
    """The image is not where the row says: no such file, a short read, or a row known only by its URL."""

    reason = "missing_image"


class CorruptImage(ValueError):
    """The bytes are there but are not a decodable image (truncated, not an image, a decompression bomb)."""

    reason = "corrupt_image"


class UrlOnlyRow(MissingImage, UserError):
    """A row known only by its URL: it must be downloaded first."""


def read_image_bytes(uri: str, offset: int | None = None, length: int | None = None) -> bytes:
    """A tar member by ranged read, or a whole file. Raises MissingImage when the bytes are not there."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        if offset is None:
            return fs.cat_file(path)
        data = fs.cat_file(path, start=offset, end=offset + length)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise MissingImage(f"{uri}: {type(e).__name__}: {e}") from None
    if len(data) != length:
        raise MissingImage(f"{uri}: short read: {len(data)} of {length} bytes at offset {offset} (file changed?)")
    return data


def read_row_image(row: dict) -> bytes:
    """The image bytes of a retrieval row (a dict with image_uri, image_offset, image_length, url, sample_id)."""
    if row.get("image_uri") is not None:
        return read_image_bytes(row["image_uri"], row.get("image_offset"), row.get("image_length"))
    raise UrlOnlyRow(f"sample {row.get('sample_id')} is known only by its URL ({row.get('url')}); download the set "
                     "first: `react-index download SET.parquet --out DIR` (or img2dataset, then `react-index attach "
                     "SET.parquet IMG2DATASET_DIR --out NEW.parquet`)")


def _to_8bit(img):
    """High-bit-depth greyscale (16-bit PNG/TIFF: modes I;16*, I, F) scaled to 8 bits. Pillow's convert('RGB')
    would clip those values at 255 and turn almost every such image white."""
    import numpy as np
    from PIL import Image

    a = np.asarray(img)
    if img.mode.startswith("I;16") or (img.mode == "I" and a.size and a.max() > 255 and a.min() >= 0
                                       and a.max() <= 65535):
        a = a.astype(np.float64) / 257.0
    elif img.mode == "I":
        a = a.astype(np.float64)
    elif img.mode == "F":
        a = a.astype(np.float64) * (255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0)
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8))


def decode_rgb(data: bytes, where: str = "image"):
    """A fully decoded RGB PIL image. Raises CorruptImage (naming `where`) for anything that does not decode,
    including images above MAX_PIXELS (decompression bombs). High-bit-depth images keep their tones."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise CorruptImage(f"{where}: {img.width}×{img.height} pixels is above the {MAX_PIXELS:,} "
                                       "limit (a decompression bomb?)")
                img.load()
                if img.mode in ("I", "F") or img.mode.startswith("I;16"):
                    img = _to_8bit(img)
                elif img.mode in ("P", "PA") and "transparency" in img.info:
                    img = img.convert("RGBA")
                return img.convert("RGB")
    except CorruptImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise CorruptImage(f"{where}: {e}") from None
    except Exception as e:  # Pillow raises many types for bad bytes (OSError, SyntaxError, ValueError, …)
        raise CorruptImage(f"{where}: not a decodable image ({type(e).__name__}: {e})") from None
