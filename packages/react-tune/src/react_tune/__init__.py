"""REACT customization: train gated blocks on a frozen open_clip model from a retrieval set.

The Python API (what the `react-tune` CLI calls):

    from react_tune import train, TrainConfig, load_model

    train(retrieval="pets.parquet", model="ViT-B-32", pretrained="laion400m_e32", out="ckpt/pets", steps=2000)
    model, preprocess, tokenizer = load_model("ckpt/pets")

Names are imported on first use, so `import react_tune` (and `react-tune --version`) does not import torch.
"""

import sys
import types
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

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


def __getattr__(name: str):
    if name in _API:
        value = getattr(import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


class _Package(types.ModuleType):
    """Importing the submodule react_tune.train sets the package attribute `train` to that module; here the public
    name stays the function. The module itself is `sys.modules["react_tune.train"]` (or `from react_tune.train
    import ...`)."""

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
