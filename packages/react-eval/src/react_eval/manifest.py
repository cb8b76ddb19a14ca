"""The manifests react-eval writes and reads: eval results (CLIP_benchmark-compatible JSON).

The contract itself lives in `_manifests.py` (vendored, see docs/manifests.md). Checkpoint
manifests are read by the loader that a checkpoint's package registers, not here.
"""

from functools import partial

from . import __version__, _manifests
from ._manifests import EVAL_RESULT, ManifestError, lineage_entry

__all__ = ["EVAL_RESULT", "ManifestError", "lineage_entry", "read_manifest", "write_manifest"]

PRODUCER = {"name": "react-eval", "version": __version__}

write_manifest = partial(_manifests.write_manifest, producer=PRODUCER)
read_manifest = partial(_manifests.read_manifest, reader="react-eval")
