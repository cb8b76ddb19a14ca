"""The toy-scale REACT reproduction (`python3 -m nox -s reproduce`; tables and plots for docs/reproduction.md).

One toy world and one index (the demo's), the four rarest shapes as the target domain, and these runs of
`react-tune train` (each then evaluated zero-shot with `react-eval run` on the held-out classification set):

- gated-image and locked-text on the main retrieval set (MODE, K per template per class), seeds 0, 1, 2;
- a control: the same gated-image training on as many randomly drawn corpus pairs, seeds 0, 1, 2;
- gated-image with K per template ∈ KS (seed 0), and with the other retrieval mode (t2i ↔ t2t, seed 0).

Every run trains for the same number of steps, so the runs differ only in what they are trained on.
Writes OUT/results.json, OUT/tables.md and OUT/gates.png. Reruns reuse finished runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from chain import BASE, ChainConfig, build_index, evaluate, result_for, retrieve, split_accuracy, tune

from toyworld.models import base_weights

MODE, K_MAIN = "t2t", 10  # why t2t: docs/reproduction.md (the toy base's image side is weakest on rare shapes)
KS = (50, 200, 1000)
SEEDS = (0, 1, 2)


def random_control(main_rows: Path, index: Path, out: Path, seed: int = 0) -> Path:
    """A retrieval set of as many uniformly drawn corpus pairs as `main_rows`, labelled with its classes."""
    from react_index.manifest import lineage_entry, read_manifest, write_retrieval_manifest
    from react_index.query import ROW_SCHEMA, _write_parquet_atomic, join_metadata, open_index

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
    _write_parquet_atomic(str(out), pa.table(columns, schema=ROW_SCHEMA))
    sidecar = json.loads(Path(f"{main_rows}.json").read_text())
    body = {k: sidecar[k] for k in ("model", "k", "classes", "templates", "counts_per_class")}
    body |= {"mode": "random-control", "selection": {"random_seed": seed, "same_rows_as": str(main_rows)},
             "unique_samples": len(unique)}
    index_manifest = read_manifest(f"{index}/manifest.json", "react.index")
    write_retrieval_manifest(str(out), body, [lineage_entry(index_manifest, f"{index}/manifest.json")])
    return out


def true_shapes(index: Path) -> np.ndarray:
    """The toy ground truth (the shape drawn) of every index row, from the sample json kept in the store."""
    from react_index.query import open_index

    _, store, _ = open_index(str(index), {"image"})
    return np.array([json.loads(j)["toy"]["shape"] for s in range(len(store.offsets()) - 1)
                     for j in store.metadata(s, columns=["json"]).column("json").to_pylist()])


def judged_rows(rows: Path, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class name, whether its sample truly shows that class) for every row of a retrieval set."""
    table = pq.read_table(rows, columns=["class_name", "sample_id"])
    names = np.array(table.column("class_name"))
    return names, truth[table.column("sample_id").to_numpy()] == names


def retrieval_precision(rows: Path, truth: np.ndarray) -> float:
    """Share of retrieved rows whose sample truly shows the row's class."""
    return float(judged_rows(rows, truth)[1].mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="repro-out")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS), help="more K per template to try")
    parser.add_argument("--mode", default=MODE, choices=["t2i", "t2t"], help="the main retrieval mode")
    parser.add_argument("--k", type=int, default=K_MAIN, help="the main K per template per class")
    args = parser.parse_args()
    out, weights, t_start = Path(args.out), base_weights(), time.perf_counter()
    index = build_index(out, "demo", weights)

    mode, other = args.mode, {"t2i": "t2t", "t2t": "t2i"}[args.mode]

    def cfg(**kw) -> ChainConfig:
        return ChainConfig(out=out, steps=args.steps, **{"k": args.k, "mode": mode} | kw)

    sets = {"main": retrieve(cfg(), index, f"{mode}-k{args.k}"),
            other: retrieve(cfg(mode=other), index, f"{other}-k{args.k}")}
    for k in args.ks:
        sets[f"k{k}"] = retrieve(cfg(k=k), index, f"{mode}-k{k}")
    sets["random"] = random_control(sets["main"], index, out / "retrieval" / f"random-like-{mode}-k{args.k}.parquet")

    runs = {}  # run name -> (variant, retrieval set, seed)
    for seed in args.seeds:
        runs[f"gated-image/main/s{seed}"] = ("gated-image", "main", seed)
        runs[f"locked-text/main/s{seed}"] = ("locked-text", "main", seed)
        runs[f"gated-image/random/s{seed}"] = ("gated-image", "random", seed)
    runs[f"gated-image/{other}/s0"] = ("gated-image", other, 0)
    for k in args.ks:
        runs[f"gated-image/k{k}/s0"] = ("gated-image", f"k{k}", 0)

    models = {"base": ["--model", BASE, "--pretrained", weights]}
    checkpoints = {}
    for name, (variant, rows, seed) in runs.items():
        checkpoints[name] = tune(cfg(variant=variant, seed=seed), sets[rows], weights,
                                 f"{name.replace('/', '-')}-{mode}-k{args.k}-{args.steps}steps")
        models[name] = ["--model", f"react:{checkpoints[name]}"]
    results = evaluate(out, models)

    target = ChainConfig(out=out).target
    accuracy = {"base": split_accuracy(result_for(results, BASE), target)}
    accuracy |= {name: split_accuracy(result_for(results, f"react:{ckpt}"), target)
                 for name, ckpt in checkpoints.items()}
    truth = true_shapes(index)
    precision = {name: retrieval_precision(rows, truth) for name, rows in sets.items()}
    sizes = {name: pq.read_metadata(rows).num_rows for name, rows in sets.items()}
    gates = {name: gate_curve(ckpt) for name, ckpt in checkpoints.items() if name.startswith("gated-image/")}
    report = {"accuracy": accuracy, "retrieval_precision": precision, "retrieval_rows": sizes, "gates": gates,
              "steps": args.steps, "seeds": args.seeds, "ks": args.ks, "k_main": args.k, "mode": mode,
              "other_mode": other, "target": list(target),
              "minutes": round((time.perf_counter() - t_start) / 60, 1)}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "tables.md").write_text(tables(report))
    plot_gates(gates, out / "gates.png")
    print(tables(report))
    print(f"-> {out}/results.json, {out}/tables.md, {out}/gates.png  ({report['minutes']} min)")


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


def _mean_std(values: list[float]) -> str:
    values = 100 * np.asarray(values)
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def tables(r: dict) -> str:
    acc, main = r["accuracy"], f"{r['mode']}, K={r['k_main']} per template"

    def group(prefix: str) -> dict:
        return {part: [acc[n][part] for n in acc if n.startswith(prefix + "/s")] for part in ("target", "rest", "all")}

    base = acc["base"]
    lines = [f"Target classes: {', '.join(r['target'])}. Zero-shot top-1 (%) on the held-out toy classification set "
             f"(40 images per class); mean ± std over seeds {r['seeds']}; {r['steps']} steps per run.", "",
             "| model | trained on | target | rest | all |", "|---|---|---|---|---|",
             f"| base | — | {100 * base['target']:.1f} | {100 * base['rest']:.1f} | {100 * base['all']:.1f} |"]
    for label, prefix, data in (("locked-text", "locked-text/main", main), ("gated-image", "gated-image/main", main),
                                ("gated-image (control)", "gated-image/random", "random corpus pairs, same count")):
        g = group(prefix)
        if g["target"]:
            lines.append(f"| {label} | {data} | {_mean_std(g['target'])} | {_mean_std(g['rest'])} | "
                         f"{_mean_std(g['all'])} |")
    lines += ["", "| gated-image, seed 0, trained on | rows | retrieval precision | target | rest |",
              "|---|---|---|---|---|"]
    variants = [(r["k_main"], "gated-image/main/s0", "main", r["mode"])]
    variants += [(k, f"gated-image/k{k}/s0", f"k{k}", r["mode"]) for k in r["ks"]]
    variants += [(r["k_main"], f"gated-image/{r['other_mode']}/s0", r["other_mode"], r["other_mode"])]
    for k, name, rows, mode in sorted(variants, key=lambda v: (v[3] != r["mode"], v[0])):
        if name in acc:
            lines.append(f"| {mode}, K={k} per template | {r['retrieval_rows'][rows]} | "
                         f"{100 * r['retrieval_precision'][rows]:.1f} % | {100 * acc[name]['target']:.1f} | "
                         f"{100 * acc[name]['rest']:.1f} |")
    if "gated-image/random/s0" in acc:
        lines.append(f"| random corpus pairs | {r['retrieval_rows']['random']} | "
                     f"{100 * r['retrieval_precision']['random']:.1f} % | "
                     f"{100 * acc['gated-image/random/s0']['target']:.1f} | "
                     f"{100 * acc['gated-image/random/s0']['rest']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
