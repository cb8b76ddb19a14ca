"""REACT customization: train gated blocks on a frozen open_clip model from a retrieval set.

The Python API (what the `react-tune` CLI calls):

    from react_tune import train, TrainConfig, load_model

    train(retrieval="pets.parquet", model="ViT-B-32", pretrained="laion400m_e32", out="ckpt/pets", steps=2000)
    model, preprocess, tokenizer = load_model("ckpt/pets")

Names are imported on first use, so `import react_tune` (and `react-tune --version`) does not import torch.
"""

from importlib.metadata import PackageNotFoundError, version

from ._lazyapi import lazy_api

try:
    __version__ = version("react-tune")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0+unknown"

# public name -> the module that defines it (imported when the name is first used)
_API = {
    "train": "train",
    "TrainConfig": "train",
    "load_model": "checkpoint",
    "load_checkpoint": "checkpoint",
    "export_merged": "export",
    "UserError": "_manifests",
}
__all__ = list(_API)


lazy_api(__name__, _API)
