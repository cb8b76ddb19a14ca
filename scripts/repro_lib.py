"""What the two toy reproductions share (scripts/reproduce.py, v2; scripts/reproduce_v1.py): the random-pairs
control, the toy ground truth of retrieved rows, gate curves and the mean ± std format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def random_control(main_rows: Path, index: Path, out: Path, seed: int = 0) -> Path:
    """A retrieval set of as many uniformly drawn corpus pairs as `main_rows`, labelled with its classes."""
    from react_index._manifests import write_parquet_atomic
    from react_index.manifest import lineage_entry, read_manifest, write_retrieval_manifest
    from react_index.query import ROW_SCHEMA, join_metadata, open_index

    if out.exists():
        return out
    main = pq.read_table(main_rows)
    _, store, _ = open_index(str(index), {"image"})
    ids = np.sort(np.random.default_rng(seed).choice(store.n, size=main.num_rows, replace=store.n < main.num_rows))
    unique = np.unique(ids)
    rows = join_metadata(store, unique).take(np.searchsorted(unique, ids))
    columns = {name: main.column(name) for name in ("class_name", "class_index", "templates", "rank")}
    columns |= {"score": np.zeros(main.num_rows, np.float32), "sample_id": ids}
    columns |= {name: rows.column(name) for name in rows.column_names}
    write_parquet_atomic(str(out), pa.table(columns, schema=ROW_SCHEMA))
    sidecar = json.loads(Path(f"{main_rows}.json").read_text())
    body = {k: sidecar[k] for k in ("model", "k", "classes", "templates", "counts_per_class")}
    body |= {"mode": "random-control", "selection": {"random_seed": seed, "same_rows_as": str(main_rows)},
             "unique_samples": len(unique)}
    index_manifest = read_manifest(f"{index}/manifest.json", "react.index")
    write_retrieval_manifest(str(out), body, [lineage_entry(index_manifest, f"{index}/manifest.json")])
    return out


def true_labels(index: Path, key: str = "shape") -> np.ndarray:
    """The toy ground truth of every index row (`key` of the sample json's "toy" record: "shape" in the demo
    world, "class" in the longtail world), from the sample json kept in the store."""
    from react_index.query import open_index

    _, store, _ = open_index(str(index), {"image"})
    return np.array([json.loads(j)["toy"][key] for s in range(len(store.offsets()) - 1)
                     for j in store.metadata(s, columns=["json"]).column("json").to_pylist()])


def true_shapes(index: Path) -> np.ndarray:
    return true_labels(index, "shape")


def judged_rows(rows: Path, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class name, whether its sample truly shows that class) for every row of a retrieval set."""
    table = pq.read_table(rows, columns=["class_name", "sample_id"])
    names = np.array(table.column("class_name"))
    return names, truth[table.column("sample_id").to_numpy()] == names


def retrieval_precision(rows: Path, truth: np.ndarray) -> float:
    """Share of retrieved rows whose sample truly shows the row's class."""
    return float(judged_rows(rows, truth)[1].mean())


def gate_curve(checkpoint: Path) -> list[tuple[int, float]]:
    """(step, mean |tanh gate|) from the training log."""
    curve = []
    for line in (checkpoint / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("gates"):
            curve.append((record["step"], float(np.mean(np.abs(list(record["gates"].values()))))))
    return curve


def plot_gates(gates: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for name, curve in gates.items():
        if curve:
            ax.plot(*zip(*curve, strict=True), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("mean |tanh(gate)|")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def mean_std(values: list[float], scale: float = 100) -> str:
    values = scale * np.asarray(values)
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"
