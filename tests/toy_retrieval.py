"""Retrieval sets over toy-world shards, written from docs/manifests.md alone (no react-index)."""

import json
import tarfile

import pyarrow as pa


def toy_rows(shards, classes=None) -> pa.Table:
    """Retrieval rows for every sample of toy tar shards, located by tar member offsets (read with tarfile,
    as any producer following docs/manifests.md would), class = the sample's true shape."""
    rows = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, m in members.items():
                if not name.endswith(".jpg"):
                    continue
                key = name[:-4]
                meta = json.loads(tar.extractfile(members[key + ".json"]).read())
                rows.append({"key": key, "caption": meta["caption"], "image_uri": str(shard),
                             "image_offset": m.offset_data, "image_length": m.size, "url": meta["url"],
                             "class_name": meta["toy"]["shape"]})
    classes = classes or sorted({r["class_name"] for r in rows})
    return pa.table({
        "class_name": [r["class_name"] for r in rows],
        "class_index": pa.array([classes.index(r["class_name"]) for r in rows], pa.int32()),
        "templates": [["a photo of a {c}."]] * len(rows),
        "rank": pa.array(range(len(rows)), pa.int32()),
        "score": pa.array([0.5] * len(rows), pa.float32()),
        "sample_id": pa.array(range(len(rows)), pa.int64()),
        "key": [r["key"] for r in rows],
        "caption": [r["caption"] for r in rows],
        "image_uri": [r["image_uri"] for r in rows],
        "image_offset": pa.array([r["image_offset"] for r in rows], pa.int64()),
        "image_length": pa.array([r["image_length"] for r in rows], pa.int64()),
        "url": [r["url"] for r in rows],
    })
