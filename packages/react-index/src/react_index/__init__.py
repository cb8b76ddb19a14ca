"""Retrieval for REACT: embed image-text corpora, build faiss indexes, retrieve per-class training sets.

The Python API, the same steps as the `react-index` command (which calls these functions):

    from react_index import embed, build_index, retrieve, load_classes, Selection

    embed(["shards/{00000..00009}.tar"], "store", model="ViT-B-32", pretrained="laion400m_e32")
    build_index("store", "index", max_memory="4G")
    retrieve("index", load_classes("pets"), out="pets.parquet", selection=Selection(k=125))

Names are imported on first use, so `import react_index` loads neither torch nor faiss; only embedding images and
encoding text queries need torch (the [clip] extra).
"""

import sys
import types
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("react-index")
except PackageNotFoundError:  # running from a source tree that was not pip-installed
    __version__ = "0+unknown"

# public name -> the module that defines it (imported when the name is first used)
_API = {
    "embed": "embed",
    "build_index": "build",
    "add": "add",
    "adopt": "adopt",
    "retrieve": "query",
    "Selection": "query",
    "open_index": "query",
    "open_store": "store",
    "Store": "store",
    "load_classes": "domain",
    "load_templates": "domain",
    "TargetClass": "domain",
    "download": "download",
    "DownloadOptions": "download",
    "attach": "attach",
    "materialize": "materialize",
    "inspect": "inspect_html",
    "describe": "info",
    "concept_frequency": "frequency",
    "write_frequency": "frequency",
    "caption_candidates": "captions",
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
    """Importing a submodule (react_index.embed, .add, .adopt, .download, .attach, .materialize) sets the package
    attribute of the same name to that module; here the public name stays the function. The module itself is
    `sys.modules["react_index.embed"]` (or `from react_index.embed import ...`)."""

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
