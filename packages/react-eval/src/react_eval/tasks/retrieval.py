"""Zero-shot image-text retrieval: recall@k both ways; an image hits if any of its captions is retrieved."""

from __future__ import annotations

from .._loader_protocol import LoadedModel
from ..datasets import Retrieval
from ..features import encode_images, encode_texts
from ..metrics import retrieval_recall


def zeroshot_retrieval(loaded: LoadedModel, ds: Retrieval, batch_size: int = 64, workers: int = 2, device: str = "cpu",
                       ks=(1, 5, 10)):
    images = encode_images(loaded, ds.images, batch_size, workers, device)
    owner = [i for i, caps in enumerate(ds.captions) for _ in caps]
    texts = encode_texts(loaded, [c for caps in ds.captions for c in caps], device=device)
    similarity = texts @ images.T  # captions × images
    captions_of = [set() for _ in ds.images]
    for t, i in enumerate(owner):
        captions_of[i].add(t)
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = retrieval_recall(similarity, [{i} for i in owner], k)
        metrics[f"text_retrieval_recall@{k}"] = retrieval_recall(similarity.T, captions_of, k)
    return metrics, {}
