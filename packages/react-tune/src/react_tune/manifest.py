"""The manifests react-tune reads (retrieval) and writes (checkpoint).

The contract itself lives in `_manifests.py` (vendored, see docs/manifests.md); react-tune never
imports react-index.
"""

from functools import partial

from . import __version__, _manifests
from ._manifests import CHECKPOINT, RETRIEVAL, ManifestError, lineage_entry

__all__ = ["CHECKPOINT", "RETRIEVAL", "ManifestError", "lineage_entry", "read_manifest",
           "read_retrieval_manifest", "write_manifest"]

PRODUCER = {"name": "react-tune", "version": __version__}

write_manifest = partial(_manifests.write_manifest, producer=PRODUCER)
read_manifest = partial(_manifests.read_manifest, reader="react-tune")
read_retrieval_manifest = partial(_manifests.read_retrieval_manifest, reader="react-tune")
