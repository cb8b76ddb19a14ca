"""The manifests react-index writes (embedding store, index, retrieval) and reads (store, index).

The contract itself lives in `_manifests.py` (vendored, see docs/manifests.md).
"""

from functools import partial

from . import __version__, _manifests
from ._manifests import INDEX, RETRIEVAL, STORE, ManifestError, lineage_entry

__all__ = ["INDEX", "RETRIEVAL", "STORE", "ManifestError", "lineage_entry", "read_manifest",
           "read_retrieval_manifest", "write_manifest", "write_retrieval_manifest"]

PRODUCER = {"name": "react-index", "version": __version__}

write_manifest = partial(_manifests.write_manifest, producer=PRODUCER)
write_retrieval_manifest = partial(_manifests.write_retrieval_manifest, producer=PRODUCER)
read_manifest = partial(_manifests.read_manifest, reader="react-index")
read_retrieval_manifest = partial(_manifests.read_retrieval_manifest, reader="react-index")
