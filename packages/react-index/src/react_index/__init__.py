"""Retrieval for REACT: embed image-text corpora, build faiss indexes, retrieve per-class training sets.

The Python API, the same steps as the `react-index` command (which calls these functions):

    from react_index import embed, build_index, retrieve, load_classes, Selection

    embed(["shards/{00000..00009}.tar"], "store", model="ViT-B-32", pretrained="laion400m_e32")
    build_index("store", "index", max_memory="4G")
    retrieve("index", load_classes("pets"), out="pets.parquet", selection=Selection(k=125))

Names are imported on first use, so `import react_index` loads neither torch nor faiss; only embedding images and
encoding text queries need torch (the [clip] extra).
"""

from importlib.metadata import PackageNotFoundError, version

from ._lazyapi import lazy_api

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


lazy_api(__name__, _API)
