"""Images are decoded by the one vendored decoder when embedding a corpus and when encoding example images:
a 16-bit greyscale PNG keeps its tones (Pillow's convert('RGB') clips it to white)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from react_index._manifests import UserError
from react_index.clip_embed import QueryEncoder, ShardBatches
from react_index.sources import discover

GREY = 20_000  # of 65,535: mid grey, 77.8 in 8 bits


def _png16() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), GREY, np.uint16)).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")  # really 16-bit
    return buf.getvalue()


class _Seen:
    """A preprocess that records the decoded image it gets."""

    def __init__(self):
        self.images = []

    def __call__(self, img):
        self.images.append(np.asarray(img))
        return torch.from_numpy(np.asarray(img, np.float32))


def test_16_bit_corpus_images_are_embedded_in_their_own_tones(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "grey.png").write_bytes(_png16())
    (folder / "grey.txt").write_text("a grey square")
    seen = _Seen()
    batches = list(ShardBatches(discover([str(folder)]), seen, lambda texts: torch.zeros(len(texts), 2), 8))
    assert batches[-1]["skipped"] == {} and len(seen.images) == 1
    assert seen.images[0].shape == (32, 32, 3) and abs(seen.images[0].mean() - GREY / 257) < 1


def test_16_bit_example_images_are_encoded_in_their_own_tones_and_bad_ones_named():
    class Model:
        def encode_image(self, x):
            return x.mean(dim=(1, 2))

    encoder = QueryEncoder.__new__(QueryEncoder)  # the decoding path only: no weights needed
    encoder.preprocess, encoder.model, encoder.device, encoder.batch_size = _Seen(), Model(), "cpu", 8
    encoder.images([_png16()])
    assert abs(encoder.preprocess.images[0].mean() - GREY / 257) < 1
    with pytest.raises(UserError, match=r"examples/cat/bad.jpg: not a decodable image.*replace or remove"):
        encoder.images([b"not an image"], ["examples/cat/bad.jpg"])


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "ViT-Nope"], "--model ViT-Nope: not an open_clip model name"),
    (["--model", "ViT-B-32", "--pretrained", "laion_typo"],
     "--pretrained laion_typo: neither a weights file nor an open_clip tag of ViT-B-32"),
])
def test_an_unknown_model_or_pretrained_tag_is_one_line(tmp_path, args, message):
    from click.testing import CliRunner

    from react_index.cli import main

    (tmp_path / "a.tar").write_bytes(b"")
    out = CliRunner().invoke(main, ["embed", str(tmp_path / "a.tar"), "--out", str(tmp_path / "store"), *args])
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), out.exception
    assert message in out.output and not (tmp_path / "store").exists()
